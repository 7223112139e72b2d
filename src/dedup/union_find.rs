//! Union-find over documents numbered 0..n: a u32 parent and a u32 set size per document (8 bytes
//! each), path halving, union by size with ties going to the first argument's root, as
//! datatrove's `MinhashDedupCluster` does (tests/parity/MINHASH.md §8), so the same roots win.

pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        assert!(
            n < u32::MAX as usize,
            "fewer than 2^32 - 1 documents per dedup"
        );
        UnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grand = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grand;
            x = grand;
        }
        x
    }

    /// Size of the set whose root is `root`.
    pub fn size_of_root(&self, root: u32) -> u32 {
        self.size[root as usize]
    }

    /// Joins the sets of `a` and `b`: the larger set's root stays root; on a tie, `a`'s root.
    pub fn union(&mut self, a: u32, b: u32) {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn larger_sets_keep_their_root_and_ties_go_to_the_first() {
        // datatrove's edge case: (Y, Z) makes Y root; then (X, Z): X's singleton joins Y.
        let (x, y, z) = (0, 1, 2);
        let mut uf = UnionFind::new(3);
        uf.union(y, z);
        uf.union(x, z);
        assert_eq!(uf.find(x), y);
        assert_eq!(uf.size_of_root(y), 3);
        let mut uf = UnionFind::new(4);
        uf.union(3, 2);
        assert_eq!(uf.find(2), 3);
        uf.union(0, 1);
        uf.union(1, 2);
        assert_eq!(uf.find(3), 0);
    }
}
