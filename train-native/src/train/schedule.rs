//! Learning-rate schedules, as transformers defines them (`get_*_schedule_with_warmup`):
//! the multiplier for optimizer step `s` (0-based, so the first update with
//! warm-up uses lr 0, exactly as HF's LambdaLR does).

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    Cosine,
    Linear,
    Constant,
}

impl SchedulerKind {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "cosine" => SchedulerKind::Cosine,
            "linear" => SchedulerKind::Linear,
            "constant" | "constant_with_warmup" => SchedulerKind::Constant,
            other => bail!("config: `lr_scheduler` must be cosine, linear or constant, got `{other}`"),
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LrSchedule {
    pub kind: SchedulerKind,
    pub base_lr: f64,
    pub warmup: usize,
    pub total: usize,
}

impl LrSchedule {
    /// Warm-up steps: an explicit count wins, else `ceil(ratio · total)` (HF's rule).
    pub fn new(kind: SchedulerKind, base_lr: f64, total: usize, warmup_ratio: f64, warmup_steps: usize) -> Self {
        let warmup = if warmup_steps > 0 {
            warmup_steps
        } else {
            (warmup_ratio * total as f64).ceil() as usize
        };
        LrSchedule {
            kind,
            base_lr,
            warmup,
            total,
        }
    }

    /// Learning rate for the optimizer step with 0-based index `step`.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base_lr * step as f64 / self.warmup.max(1) as f64;
        }
        let decay_len = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = (step - self.warmup) as f64 / decay_len;
        let factor = match self.kind {
            SchedulerKind::Constant => 1.0,
            SchedulerKind::Linear => (1.0 - progress).max(0.0),
            SchedulerKind::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        };
        self.base_lr * factor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_with_warmup_matches_transformers() {
        // get_cosine_schedule_with_warmup(opt, 2, 10) with lr 1: [0, .5, 1, .9619, .8536, .6913, .5, .3087, .1464, .0381]
        let s = LrSchedule::new(SchedulerKind::Cosine, 1.0, 10, 0.15, 0);
        assert_eq!(s.warmup, 2);
        let want = [
            0.0,
            0.5,
            1.0,
            0.961_939_8,
            0.853_553_4,
            0.691_341_7,
            0.5,
            0.308_658_3,
            0.146_446_6,
            0.038_060_2,
        ];
        for (i, w) in want.iter().enumerate() {
            assert!((s.lr(i) - w).abs() < 1e-6, "step {i}: {} vs {w}", s.lr(i));
        }
        assert!(s.lr(10).abs() < 1e-12);
    }

    #[test]
    fn linear_and_constant_and_explicit_warmup() {
        let l = LrSchedule::new(SchedulerKind::Linear, 2.0, 5, 0.0, 1);
        assert_eq!(l.warmup, 1);
        assert_eq!([l.lr(0), l.lr(1), l.lr(3), l.lr(5)], [0.0, 2.0, 1.0, 0.0]);
        let c = LrSchedule::new(SchedulerKind::Constant, 3.0, 5, 0.0, 0);
        assert_eq!(c.lr(0), 3.0);
        assert_eq!(c.lr(4), 3.0);
        assert!(SchedulerKind::parse("exp").is_err());
    }
}
