//! Mixture planning: how many tokens each source contributes (weights or fixed targets, a total
//! budget, a cap on epochs per source with the excess given to the others as UniMax does, an
//! optional temperature), and which documents realise it (whole epochs, then a seeded sample).

use crate::error::{GristError, Result};
use crate::util::permutation;

/// One source's pool as the planner sees it.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    /// Tokens of one epoch (long documents counted with their upsampling factor).
    pub epoch_tokens: u64,
    /// Relative weight (before temperature); `None` with a fixed `target`.
    pub weight: Option<f64>,
    /// A fixed number of tokens instead of a share of the budget.
    pub target: Option<u64>,
    pub max_epochs: f64,
}

/// Tokens to draw from each pool, in pool order, and the budget they add up to.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub targets: Vec<f64>,
    /// The share each weighted pool was meant to have (after temperature), fixed pools included
    /// as their share of the total.
    pub shares: Vec<f64>,
    pub total: f64,
}

/// Splits `total` tokens (default: the most the epoch caps allow at the weighted shares) between
/// the pools. Weighted pools share what fixed targets leave, by `weight^(1/temperature)`; a pool
/// that would pass `max_epochs` is capped there and the rest goes to the others (UniMax).
pub fn allocate(pools: &[Pool], total: Option<u64>, temperature: f64) -> Result<Allocation> {
    if temperature.is_nan() || temperature <= 0.0 {
        return Err(GristError::Usage("`temperature` must be positive".into()));
    }
    let cap = |p: &Pool| p.max_epochs * p.epoch_tokens as f64;
    let mut targets = vec![0.0; pools.len()];
    let mut fixed = 0.0;
    for (i, p) in pools.iter().enumerate() {
        if let Some(t) = p.target {
            if t as f64 > cap(p) + 0.5 {
                return Err(GristError::Usage(format!(
                    "source `{}` is asked for {t} tokens, more than `max_epochs` {} × its {} tokens",
                    p.name, p.max_epochs, p.epoch_tokens
                )));
            }
            targets[i] = t as f64;
            fixed += t as f64;
        }
    }
    let raw: Vec<f64> = pools
        .iter()
        .map(|p| match p.target {
            Some(_) => 0.0,
            None => p
                .weight
                .unwrap_or(p.epoch_tokens as f64)
                .max(0.0)
                .powf(1.0 / temperature),
        })
        .collect();
    let raw_sum: f64 = raw.iter().sum();
    let weighted: Vec<usize> = (0..pools.len())
        .filter(|&i| pools[i].target.is_none())
        .collect();
    let total = match total {
        Some(t) => t as f64,
        // The largest budget at which no weighted pool passes its cap.
        None => {
            let most = weighted
                .iter()
                .filter(|&&i| raw[i] > 0.0)
                .map(|&i| cap(&pools[i]) * raw_sum / raw[i])
                .fold(f64::INFINITY, f64::min);
            fixed + if most.is_finite() { most } else { 0.0 }
        }
    };
    if fixed > total + 0.5 {
        return Err(GristError::Usage(format!(
            "fixed `tokens` targets add up to {fixed}, more than `total_tokens` {total}"
        )));
    }
    let mut left = total - fixed;
    let mut active: Vec<usize> = weighted.iter().copied().filter(|&i| raw[i] > 0.0).collect();
    // Water-filling: give each active pool its share of what is left; cap those that overflow.
    loop {
        let sum: f64 = active.iter().map(|&i| raw[i]).sum();
        if active.is_empty() || sum <= 0.0 {
            break;
        }
        let over: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&i| left * raw[i] / sum > cap(&pools[i]))
            .collect();
        if over.is_empty() {
            for &i in &active {
                targets[i] = left * raw[i] / sum;
            }
            break;
        }
        for &i in &over {
            targets[i] = cap(&pools[i]);
            left -= targets[i];
        }
        active.retain(|i| !over.contains(i));
    }
    let shares = (0..pools.len())
        .map(|i| match pools[i].target {
            Some(t) if total > 0.0 => t as f64 / total,
            Some(_) => 0.0,
            None if raw_sum > 0.0 => (total - fixed) / total.max(1.0) * raw[i] / raw_sum,
            None => 0.0,
        })
        .collect();
    Ok(Allocation {
        targets,
        shares,
        total,
    })
}

/// Document copies one mix may select at most (they are numbered with 32 bits).
pub const MAX_SELECTED: u64 = u32::MAX as u64;
/// Bytes the mix holds per selected document copy (the selection, the shuffled items, their
/// lengths).
const BYTES_PER_SELECTED: u64 = 32;

/// The documents (indices into `lengths`, repeated) that draw `target` tokens from a pool whose
/// documents have `lengths` and upsampling `copies`: every copy of every document once per whole
/// epoch, then a seeded sample of the copies for the part-epoch, stopping nearest the target.
/// More than [`MAX_SELECTED`] copies, or more than the machine's available memory holds (absurd
/// epochs or upsampling), is an error before any memory is taken for them.
pub fn select(
    lengths: &[u64],
    copies: &[u32],
    target: f64,
    seed: u64,
) -> std::result::Result<Vec<u32>, String> {
    let epoch: u64 = lengths
        .iter()
        .zip(copies)
        .map(|(&l, &c)| l.saturating_mul(c as u64))
        .fold(0u64, u64::saturating_add);
    let mut out = Vec::new();
    if epoch == 0 || target <= 0.0 {
        return Ok(out);
    }
    let full = (target / epoch as f64).floor() as u64;
    let per_epoch: u64 = copies.iter().map(|&c| c as u64).sum();
    // Whole epochs, and at most one epoch's copies for the part-epoch.
    let part = target > (full as f64) * epoch as f64;
    let most = full
        .saturating_mul(per_epoch)
        .saturating_add(if part { per_epoch } else { 0 });
    let fits = crate::util::available_memory()
        .is_none_or(|m| most.saturating_mul(BYTES_PER_SELECTED) <= m);
    if most > MAX_SELECTED || !fits {
        return Err(format!(
            "{full} epochs of {per_epoch} document copies is up to {most} documents to select, \
             more than this machine holds; lower `max_epochs`, `total_tokens` or \
             `long_documents.factor`"
        ));
    }
    let instances: Vec<u32> = (0..lengths.len() as u32)
        .flat_map(|d| std::iter::repeat_n(d, copies[d as usize] as usize))
        .collect();
    for _ in 0..full {
        out.extend_from_slice(&instances);
    }
    let mut rest = target - (full * epoch) as f64;
    for k in permutation(instances.len(), seed) {
        let d = instances[k as usize];
        let l = lengths[d as usize] as f64;
        // Take the document if that lands nearer the target than stopping before it.
        if rest - l >= -rest {
            out.push(d);
            rest -= l;
        }
        if rest <= 0.0 {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, tokens: u64, weight: Option<f64>, max_epochs: f64) -> Pool {
        Pool {
            name: name.into(),
            epoch_tokens: tokens,
            weight,
            target: None,
            max_epochs,
        }
    }

    #[test]
    fn weights_split_the_budget() {
        let pools = [
            pool("a", 1000, Some(3.0), 4.0),
            pool("b", 1000, Some(1.0), 4.0),
        ];
        let a = allocate(&pools, Some(1000), 1.0).unwrap();
        assert_eq!(a.targets, [750.0, 250.0]);
    }

    #[test]
    fn capped_sources_give_their_excess_to_the_others() {
        // `b` may give at most 2 epochs (200); the rest of the budget goes to `a`.
        let pools = [
            pool("a", 10_000, Some(1.0), 4.0),
            pool("b", 100, Some(1.0), 2.0),
        ];
        let a = allocate(&pools, Some(1000), 1.0).unwrap();
        assert_eq!(a.targets, [800.0, 200.0]);
    }

    #[test]
    fn temperature_flattens_natural_shares() {
        let pools = [pool("a", 900, None, 100.0), pool("b", 100, None, 100.0)];
        let a = allocate(&pools, Some(1000), 2.0).unwrap();
        // Shares ∝ sqrt(900) : sqrt(100) = 3 : 1.
        assert!((a.targets[0] - 750.0).abs() < 1e-6, "{:?}", a.targets);
    }

    #[test]
    fn without_a_budget_the_epoch_caps_set_it() {
        let pools = [
            pool("a", 1000, Some(1.0), 1.0),
            pool("b", 100, Some(1.0), 4.0),
        ];
        let a = allocate(&pools, None, 1.0).unwrap();
        // `b` at 4 epochs = 400 at half the mixture: total 800.
        assert_eq!(a.total, 800.0);
        assert_eq!(a.targets, [400.0, 400.0]);
    }

    #[test]
    fn fixed_targets_must_fit() {
        let mut p = pool("a", 100, None, 1.0);
        p.target = Some(500);
        assert!(allocate(&[p], Some(1000), 1.0).is_err());
    }

    #[test]
    fn selection_takes_whole_epochs_then_a_sample_near_the_target() {
        let lengths = vec![10u64; 100];
        let copies = vec![1u32; 100];
        let s = select(&lengths, &copies, 2_555.0, 7).unwrap();
        let tokens: u64 = s.iter().map(|&d| lengths[d as usize]).sum();
        assert!((2550..=2560).contains(&tokens), "{tokens}");
        assert_eq!(s, select(&lengths, &copies, 2_555.0, 7).unwrap());
        assert_ne!(s, select(&lengths, &copies, 2_555.0, 8).unwrap());
        // Absurd epochs are an error before anything is allocated.
        assert!(
            select(&[1, 1], &[1, 1], 1e15, 0)
                .unwrap_err()
                .contains("lower `max_epochs`")
        );
        assert!(select(&[1], &[u32::MAX], 1e12, 0).is_err());
        // Upsampled documents come twice per epoch.
        let s = select(&[5, 50], &[1, 2], 105.0, 0).unwrap();
        assert_eq!(s.iter().filter(|&&d| d == 1).count(), 2);
    }
}
