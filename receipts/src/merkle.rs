//! Merkle trees over a batch of receipt hashes: the root, an inclusion proof per receipt,
//! and checking a proof against a root.
//!
//! Owns the tree's shape and hashing. Leaves out which receipts form a batch (`batch.rs`)
//! and where roots are recorded (the ledger).
//!
//! # The tree
//!
//! - Leaf: `SHA-256(0x00 ‖ receipt hash)`. Node: `SHA-256(0x01 ‖ left ‖ right)`. The prefixes
//!   keep a leaf from ever being read as a node (second-preimage attacks on proofs).
//! - Levels are built bottom-up pairing neighbours left to right. A level of odd width
//!   promotes its last node unchanged to the next level: nothing is duplicated, so no two
//!   different batches share a root (the duplicated-last-node ambiguity of some trees).
//! - The root commits to the batch size: `SHA-256(0x02 ‖ size as 8 bytes big-endian ‖ top
//!   node)`, so a proof cannot claim another size than the batch anchored. The top node of a
//!   one-receipt batch is its leaf. An empty batch has no root.
//! - A proof names the leaf's `index` and the batch `size` and lists the siblings met from
//!   the leaf up, skipping levels where the node was promoted. Index and size fix which side
//!   each sibling is on, so a proof verifies for exactly one position.

use crate::digest::Digest;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;
const ROOT_PREFIX: u8 = 0x02;

/// The leaf hash of a receipt hash.
pub fn leaf_hash(receipt_hash: &Digest) -> Digest {
    Digest::of_parts(&[&[LEAF_PREFIX], receipt_hash.as_bytes()])
}

/// The hash of an inner node.
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    Digest::of_parts(&[&[NODE_PREFIX], left.as_bytes(), right.as_bytes()])
}

/// The root over the top node of a batch of `size` receipts.
pub fn root_hash(size: u64, top: &Digest) -> Digest {
    Digest::of_parts(&[&[ROOT_PREFIX], &size.to_be_bytes(), top.as_bytes()])
}

/// The proof that a receipt hash is the `index`-th leaf of a batch of `size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    pub index: u64,
    pub size: u64,
    pub siblings: Vec<Digest>,
}

impl InclusionProof {
    /// A compact form for a store column: index and size (8 bytes each, big-endian), then
    /// the siblings' 32 bytes each.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 32 * self.siblings.len());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        for s in &self.siblings {
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    /// Reads [`InclusionProof::to_bytes`] back; `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<InclusionProof> {
        let (head, rest) = bytes.split_at_checked(16)?;
        if rest.len() % 32 != 0 {
            return None;
        }
        let (index, size) = head.split_at(8);
        Some(InclusionProof {
            index: u64::from_be_bytes(index.try_into().ok()?),
            size: u64::from_be_bytes(size.try_into().ok()?),
            siblings: rest
                .chunks_exact(32)
                .map(|c| c.try_into().map(Digest))
                .collect::<Result<_, _>>()
                .ok()?,
        })
    }
}

/// A built tree: every level, leaves first, root last.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    levels: Vec<Vec<Digest>>,
}

impl MerkleTree {
    /// The tree over `receipt_hashes`, in batch order; `None` for an empty batch.
    pub fn build(receipt_hashes: &[Digest]) -> Option<MerkleTree> {
        if receipt_hashes.is_empty() {
            return None;
        }
        let mut levels = vec![receipt_hashes.iter().map(leaf_hash).collect::<Vec<_>>()];
        while let Some(level) = levels.last()
            && level.len() > 1
        {
            let next = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    [single] => *single,
                    _ => unreachable!("chunks(2) yields one or two items"),
                })
                .collect();
            levels.push(next);
        }
        Some(MerkleTree { levels })
    }

    pub fn root(&self) -> Digest {
        // `build` refuses empty input and stops at a level of one node.
        let top = self
            .levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(Digest::ZERO);
        root_hash(self.size(), &top)
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The proof for the leaf at `index`; `None` past the end.
    pub fn proof(&self, index: u64) -> Option<InclusionProof> {
        let size = self.size();
        if index >= size {
            return None;
        }
        let mut siblings = Vec::new();
        let mut i = usize::try_from(index).ok()?;
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = if i % 2 == 1 { Some(i - 1) } else { Some(i + 1) };
            if let Some(s) = sibling
                && let Some(node) = level.get(s)
            {
                siblings.push(*node);
            }
            i /= 2;
        }
        Some(InclusionProof {
            index,
            size,
            siblings,
        })
    }

    /// Every leaf's proof, in batch order.
    pub fn proofs(&self) -> Vec<InclusionProof> {
        (0..self.size()).filter_map(|i| self.proof(i)).collect()
    }
}

/// The root of a batch; `None` when empty.
pub fn merkle_root(receipt_hashes: &[Digest]) -> Option<Digest> {
    MerkleTree::build(receipt_hashes).map(|t| t.root())
}

/// The root `proof` leads to from `receipt_hash`; `None` when the proof's shape does not fit
/// its index and size (too many or too few siblings, index past the end).
pub fn root_from_proof(receipt_hash: &Digest, proof: &InclusionProof) -> Option<Digest> {
    if proof.size == 0 || proof.index >= proof.size {
        return None;
    }
    let mut node = leaf_hash(receipt_hash);
    let mut index = proof.index;
    let mut width = proof.size;
    let mut siblings = proof.siblings.iter();
    while width > 1 {
        if index % 2 == 1 {
            node = node_hash(siblings.next()?, &node);
        } else if index + 1 < width {
            node = node_hash(&node, siblings.next()?);
        }
        index /= 2;
        width = width.div_ceil(2);
    }
    siblings
        .next()
        .is_none()
        .then(|| root_hash(proof.size, &node))
}

/// Whether `proof` shows `receipt_hash` is a leaf of the batch whose root is `root`.
pub fn verify_inclusion(receipt_hash: &Digest, proof: &InclusionProof, root: &Digest) -> bool {
    root_from_proof(receipt_hash, proof).is_some_and(|r| r == *root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| Digest::of(format!("receipt {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn every_proof_verifies_for_every_size() {
        for n in 1..=33 {
            let hs = hashes(n);
            let tree = MerkleTree::build(&hs).unwrap();
            let root = tree.root();
            assert_eq!(merkle_root(&hs), Some(root));
            for (i, proof) in tree.proofs().iter().enumerate() {
                assert_eq!(proof.index, i as u64);
                assert!(verify_inclusion(&hs[i], proof, &root), "n={n} i={i}");
                assert!(proof.siblings.len() <= 6);
            }
        }
    }

    #[test]
    fn proofs_have_a_compact_form() {
        let hs = hashes(7);
        let tree = MerkleTree::build(&hs).unwrap();
        for p in tree.proofs() {
            assert_eq!(InclusionProof::from_bytes(&p.to_bytes()), Some(p));
        }
        assert_eq!(InclusionProof::from_bytes(&[0; 15]), None);
        assert_eq!(InclusionProof::from_bytes(&[0; 17]), None);
    }

    #[test]
    fn shapes_are_as_documented() {
        let hs = hashes(3);
        let (l0, l1, l2) = (leaf_hash(&hs[0]), leaf_hash(&hs[1]), leaf_hash(&hs[2]));
        assert_eq!(merkle_root(&hs[..1]), Some(root_hash(1, &l0)));
        assert_eq!(
            merkle_root(&hs),
            Some(root_hash(3, &node_hash(&node_hash(&l0, &l1), &l2)))
        );
        assert_eq!(merkle_root(&[]), None);
        // A promoted node has no sibling at its level.
        let tree = MerkleTree::build(&hs).unwrap();
        assert_eq!(tree.proof(2).unwrap().siblings, vec![node_hash(&l0, &l1)]);
        assert_eq!(tree.proof(3), None);
    }

    #[test]
    fn no_two_batches_share_a_root() {
        // With last-node duplication, [a, b, c] and [a, b, c, c] would collide.
        let hs = hashes(3);
        let mut dup = hs.clone();
        dup.push(hs[2]);
        assert_ne!(merkle_root(&hs), merkle_root(&dup));
        // A leaf is never an inner node: the pair's node hash is not a one-leaf root.
        let pair_root = merkle_root(&hs[..2]).unwrap();
        assert_ne!(merkle_root(&[pair_root]), Some(pair_root));
    }

    type Tamper = fn(&mut Digest, &mut InclusionProof, &mut Digest, &[Digest]);

    #[test]
    fn tampering_is_detected() {
        let cases: &[(&str, Tamper)] = &[
            ("flipped sibling", |_, p, _, _| p.siblings[0].0[0] ^= 1),
            ("flipped upper sibling", |_, p, _, _| {
                let last = p.siblings.len() - 1;
                p.siblings[last].0[31] ^= 0x80
            }),
            ("wrong index", |_, p, _, _| p.index += 1),
            ("index past the end", |_, p, _, _| p.index = p.size),
            ("wrong size", |_, p, _, _| p.size -= 1),
            ("swapped leaf", |leaf, _, _, all| *leaf = all[6]),
            ("sibling dropped", |_, p, _, _| {
                p.siblings.pop();
            }),
            ("sibling added", |_, p, _, _| p.siblings.push(Digest::ZERO)),
            ("siblings reordered", |_, p, _, _| p.siblings.swap(0, 1)),
            ("other root", |_, _, root, _| root.0[5] ^= 4),
            ("empty proof", |_, p, _, _| p.size = 0),
        ];
        let hs = hashes(11);
        let tree = MerkleTree::build(&hs).unwrap();
        for (name, tamper) in cases {
            let mut leaf = hs[5];
            let mut proof = tree.proof(5).unwrap();
            let mut root = tree.root();
            assert!(verify_inclusion(&leaf, &proof, &root));
            tamper(&mut leaf, &mut proof, &mut root, &hs);
            assert!(
                !verify_inclusion(&leaf, &proof, &root),
                "{name} went unnoticed"
            );
        }
    }
}
