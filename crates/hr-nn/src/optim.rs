//! Adam / AdamW with parameter groups and serialisable state.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;

use hr_tensor::{ops, AdamStep, DType, Device, Tensor};

use crate::io::{read_safetensors, serialize_safetensors};
use crate::{Error, ParamId, ParamStore, Result};

/// A set of parameters sharing a learning rate and weight decay.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Group name (e.g. "audio_cnn", "bert", "audio_head", "text_proj").
    pub name: String,
    /// Members.
    pub params: Vec<ParamId>,
    /// Current learning rate (set by the schedule every step).
    pub lr: f64,
    /// Decoupled weight decay (0 = plain Adam).
    pub weight_decay: f64,
}

impl ParamGroup {
    /// The trainable parameters whose names start with any of `prefixes`.
    pub fn by_prefix(
        ps: &ParamStore,
        name: &str,
        prefixes: &[&str],
        lr: f64,
        weight_decay: f64,
    ) -> ParamGroup {
        let params = ps
            .iter()
            .filter(|(_, p)| p.trainable && prefixes.iter().any(|pre| p.name.starts_with(pre)))
            .map(|(id, _)| id)
            .collect();
        ParamGroup {
            name: name.to_string(),
            params,
            lr,
            weight_decay,
        }
    }
}

/// Moment decay rates and epsilon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
}

impl Default for AdamConfig {
    /// The paper's values: (0.9, 0.999), 1e-8.
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// The optimiser: moments per parameter and the step count.
#[derive(Debug, Clone)]
pub struct Adam {
    /// Hyper-parameters.
    pub cfg: AdamConfig,
    /// Parameter groups.
    pub groups: Vec<ParamGroup>,
    moments: HashMap<ParamId, (Tensor, Tensor)>,
    step: u64,
}

impl Adam {
    /// An optimiser over `groups`; a parameter may belong to one group only, and every
    /// trainable parameter must belong to one (so nothing is silently frozen).
    pub fn new(ps: &ParamStore, cfg: AdamConfig, groups: Vec<ParamGroup>) -> Result<Adam> {
        let mut owner: HashMap<ParamId, &str> = HashMap::new();
        for g in &groups {
            for &id in &g.params {
                if let Some(prev) = owner.insert(id, &g.name) {
                    return Err(Error::Config {
                        key: format!("optimizer.groups.{}", g.name),
                        msg: format!("parameter {} is also in group {prev}", ps.param(id).name),
                    });
                }
            }
        }
        let orphans: Vec<&str> = ps
            .iter()
            .filter(|(id, p)| p.trainable && !owner.contains_key(id))
            .map(|(_, p)| p.name.as_str())
            .collect();
        if !orphans.is_empty() {
            return Err(Error::Config {
                key: "optimizer.groups".into(),
                msg: format!("trainable parameters in no group: {orphans:?}"),
            });
        }
        Ok(Adam {
            cfg,
            groups,
            moments: HashMap::new(),
            step: 0,
        })
    }

    /// Moves the moments to `device` (they are created on their parameter's device at the
    /// first step, so this is only needed after [`Adam::load`] followed by a
    /// [`ParamStore::to_device`]).
    pub fn to_device(&mut self, device: hr_tensor::Device) -> Result<()> {
        for (m, v) in self.moments.values_mut() {
            *m = m.to_device(device)?;
            *v = v.to_device(device)?;
        }
        Ok(())
    }

    /// Number of steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Sets the learning rate of every group.
    pub fn set_lr(&mut self, lr: f64) {
        self.groups.iter_mut().for_each(|g| g.lr = lr);
    }

    /// One update of every parameter from its accumulated gradient: one
    /// [`ops::adam_step_multi`] per group (a single launch per group on a GPU).
    pub fn step(&mut self, ps: &mut ParamStore) -> Result<()> {
        self.step += 1;
        for g in &self.groups {
            let hp = AdamStep {
                lr: g.lr,
                beta1: self.cfg.beta1,
                beta2: self.cfg.beta2,
                eps: self.cfg.eps,
                weight_decay: g.weight_decay,
                step: self.step,
            };
            update_group(ps, &mut self.moments, &g.params, &hp)?;
        }
        Ok(())
    }

    /// Saves moments (`m.NAME`, `v.NAME`) and the step count, atomically.
    pub fn save(&self, ps: &ParamStore, path: &Path) -> Result<()> {
        let mut named: Vec<(String, &Tensor)> = Vec::new();
        for (id, (m, v)) in &self.moments {
            let n = &ps.param(*id).name;
            named.push((format!("m.{n}"), m));
            named.push((format!("v.{n}"), v));
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let meta = HashMap::from([("step".to_string(), self.step.to_string())]);
        let bytes = serialize_safetensors(named.iter().map(|(n, t)| (n.as_str(), *t)), Some(meta))?;
        Ok(hr_core::write_atomic(path, &bytes)?)
    }

    /// Restores moments and the step count saved by [`Adam::save`].
    pub fn load(&mut self, ps: &ParamStore, path: &Path) -> Result<()> {
        let file = read_safetensors(path)?;
        let bad = |msg: String| Error::from(hr_core::FileError::format(path.to_path_buf(), msg));
        let step = file.metadata.get("step").and_then(|s| s.parse().ok());
        self.step = step.ok_or_else(|| bad("missing or invalid \"step\" metadata".into()))?;
        self.moments.clear();
        for (id, p) in ps.iter().filter(|(_, p)| p.trainable) {
            match (
                file.tensors.get(&format!("m.{}", p.name)),
                file.tensors.get(&format!("v.{}", p.name)),
            ) {
                (Some(m), Some(v))
                    if m.shape() == p.value.shape() && v.shape() == p.value.shape() =>
                {
                    let conv =
                        |t: &Tensor| t.to_dtype(p.value.dtype())?.to_device(p.value.device());
                    self.moments.insert(id, (conv(m)?, conv(v)?));
                }
                (None, None) => {}
                _ => return Err(bad(format!("moments of {} missing or mis-shaped", p.name))),
            }
        }
        Ok(())
    }
}

/// Updates the parameters `ids` in one [`ops::adam_step_multi`]: their values and moments
/// (zeros at a parameter's first step) are moved out, updated and put back (also when the
/// update fails, so nothing is lost).
fn update_group(
    ps: &mut ParamStore,
    moments: &mut HashMap<ParamId, (Tensor, Tensor)>,
    ids: &[ParamId],
    hp: &AdamStep,
) -> Result<()> {
    // Fallible work first (fresh moments, the placeholder), so an error leaves the state as it
    // was.
    let hole = Tensor::zeros(&[0], DType::F32, Device::Cpu)?;
    for &id in ids {
        if let Entry::Vacant(slot) = moments.entry(id) {
            let g = ps.grad(id);
            slot.insert((g.zeros_like()?, g.zeros_like()?));
        }
    }
    let grads: Vec<Tensor> = ids.iter().map(|&id| ps.grad(id).clone()).collect();
    let (mut ms, mut vs): (Vec<Tensor>, Vec<Tensor>) =
        ids.iter().filter_map(|id| moments.remove(id)).unzip();
    let mut values: Vec<Tensor> = ids
        .iter()
        .map(|&id| std::mem::replace(ps.value_mut(id), hole.clone()))
        .collect();
    let done = ops::adam_step_multi(&mut values, &grads, &mut ms, &mut vs, hp);
    for (((&id, value), m), v) in ids.iter().zip(values).zip(ms).zip(vs) {
        *ps.value_mut(id) = value;
        moments.insert(id, (m, v));
    }
    Ok(done?)
}
