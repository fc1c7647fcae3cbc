//! Encoded examples → padded batches. The order of an epoch is a pure function
//! of (seed, epoch), so a resumed run replays exactly the batches it would have
//! seen; length grouping sorts within shuffled windows to cut padding (the
//! idea of transformers' `LengthGroupedSampler`).

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// One training sequence: token ids and which of them the loss covers
/// (`loss_mask[i]` = the model is trained to predict token `i`).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub loss_mask: Vec<bool>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// A padded batch ready for the model, shifted for next-token prediction.
pub struct Batch {
    /// `[b, t]` u32, right-padded.
    pub ids: Tensor,
    /// `[n]` u32: flat indices (`row * t + i`) of the positions whose next
    /// token is in the loss; only there is the LM head computed.
    pub positions: Tensor,
    /// `[n]` u32: the token each of those positions must predict.
    pub labels: Tensor,
    /// Real (unpadded) tokens in the batch.
    pub tokens: usize,
    /// Tokens the loss covers.
    pub target_tokens: usize,
}

/// The micro-batches of one epoch, as lists of example indices.
pub fn epoch_order(lens: &[usize], batch: usize, seed: u64, epoch: u64, group_by_length: bool) -> Vec<Vec<usize>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch);
    let mut idx: Vec<usize> = (0..lens.len()).collect();
    idx.shuffle(&mut rng);
    if !group_by_length {
        return idx.chunks(batch).map(<[usize]>::to_vec).collect();
    }
    // Sort inside windows of 50 batches, longest first, then shuffle the batches
    // so long and short ones alternate over the epoch.
    let window = batch * 50;
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for w in idx.chunks(window) {
        let mut w = w.to_vec();
        w.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
        batches.extend(w.chunks(batch).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// Right-pad with `pad_id`; padding never counts in the loss, and with causal
/// attention it cannot influence the real positions before it.
pub fn collate(examples: &[&Encoded], pad_id: u32, device: &Device) -> Result<Batch> {
    let Some(t) = examples.iter().map(|e| e.len()).max() else {
        bail!("empty batch");
    };
    if t < 2 {
        bail!("sequences of fewer than 2 tokens cannot be trained on");
    }
    let b = examples.len();
    let mut ids = vec![pad_id; b * t];
    let (mut positions, mut labels) = (vec![], vec![]);
    let (mut tokens, mut target_tokens) = (0, 0);
    for (r, e) in examples.iter().enumerate() {
        ids[r * t..r * t + e.len()].copy_from_slice(&e.ids);
        tokens += e.len();
        for i in 1..e.len() {
            if e.loss_mask[i] {
                positions.push((r * t + i - 1) as u32);
                labels.push(e.ids[i]);
                target_tokens += 1;
            }
        }
    }
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        positions: Tensor::from_vec(positions, target_tokens, device)?,
        labels: Tensor::from_vec(labels, target_tokens, device)?,
        tokens,
        target_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_a_permutation_fixed_by_seed_and_epoch() {
        let lens: Vec<usize> = (0..103).map(|i| (i * 37) % 91 + 5).collect();
        let a = epoch_order(&lens, 4, 1, 0, true);
        assert_eq!(a, epoch_order(&lens, 4, 1, 0, true));
        assert_ne!(a, epoch_order(&lens, 4, 1, 1, true));
        assert_ne!(a, epoch_order(&lens, 4, 2, 0, true));
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        assert_eq!(a.len(), 26);
    }

    #[test]
    fn grouping_reduces_padding() {
        let lens: Vec<usize> = (0..400).map(|i| (i * 7919) % 200 + 10).collect();
        let pad = |bs: &Vec<Vec<usize>>| -> usize {
            bs.iter()
                .map(|b| {
                    b.iter().map(|&i| lens[i]).max().unwrap() * b.len() - b.iter().map(|&i| lens[i]).sum::<usize>()
                })
                .sum()
        };
        let grouped = pad(&epoch_order(&lens, 4, 3, 0, true));
        let plain = pad(&epoch_order(&lens, 4, 3, 0, false));
        assert!(grouped * 5 < plain, "grouped {grouped} vs plain {plain}");
    }

    #[test]
    fn collate_shifts_and_masks() {
        let a = Encoded {
            ids: vec![10, 11, 12, 13],
            loss_mask: vec![false, false, true, true],
        };
        let b = Encoded {
            ids: vec![20, 21],
            loss_mask: vec![false, true],
        };
        let batch = collate(&[&a, &b], 0, &Device::Cpu).unwrap();
        assert_eq!(
            batch.ids.to_vec2::<u32>().unwrap(),
            vec![vec![10, 11, 12, 13], vec![20, 21, 0, 0]]
        );
        // Predictions of 12 (row 0, pos 1), 13 (row 0, pos 2) and 21 (row 1, pos 0).
        assert_eq!(batch.positions.to_vec1::<u32>().unwrap(), vec![1, 2, 4]);
        assert_eq!(batch.labels.to_vec1::<u32>().unwrap(), vec![12, 13, 21]);
        assert_eq!((batch.tokens, batch.target_tokens), (6, 3));
    }
}
