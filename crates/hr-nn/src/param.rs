//! Named parameters with gradients (and non-trainable buffers such as BatchNorm running
//! statistics), in a stable registration order, with safetensors load/save by name.

use std::collections::HashMap;
use std::path::Path;

use hr_tensor::{ops, DType, Device, Tensor};

use crate::io::{read_safetensors, serialize_safetensors};
use crate::{Error, MisShaped, Result};

/// Handle of one entry of a [`ParamStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(usize);

/// One named entry.
#[derive(Debug, Clone)]
pub struct Param {
    /// Full name (HF / EfficientAT / PyTorch style, dot separated).
    pub name: String,
    /// Current value.
    pub value: Tensor,
    /// Accumulated gradient (same shape); unused for buffers.
    pub grad: Tensor,
    /// False for buffers (running statistics): no gradient, not optimised.
    pub trainable: bool,
    /// `grad` holds the zeros of the last `zero_grad` (or of registration) and nothing has
    /// been added or written since: the first [`ParamStore::accumulate`] then takes the
    /// incoming gradient as is (a shared copy-on-write handle) instead of adding it to zeros.
    grad_is_zero: bool,
}

/// All parameters and buffers of a model.
#[derive(Debug, Clone, Default)]
pub struct ParamStore {
    params: Vec<Param>,
    index: HashMap<String, usize>,
}

/// Options of [`ParamStore::load_safetensors`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Keys in the file with these suffixes are ignored (e.g. "num_batches_tracked").
    pub ignore_suffixes: Vec<String>,
    /// Prefix prepended to every file key before matching (e.g. "audio." for a sub-model).
    pub prefix: String,
    /// Model keys may be absent from the file (they keep their current value).
    pub allow_missing: bool,
    /// File keys the model does not have are ignored.
    pub allow_unexpected: bool,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> ParamStore {
        ParamStore::default()
    }

    fn insert(&mut self, name: &str, value: Tensor, trainable: bool) -> Result<ParamId> {
        if self.index.contains_key(name) {
            return Err(Error::DuplicateName(name.to_string()));
        }
        let grad = value.zeros_like()?;
        self.index.insert(name.to_string(), self.params.len());
        self.params.push(Param {
            name: name.to_string(),
            value,
            grad,
            trainable,
            grad_is_zero: true,
        });
        Ok(ParamId(self.params.len() - 1))
    }

    /// Registers a trainable parameter.
    pub fn add(&mut self, name: &str, value: Tensor) -> Result<ParamId> {
        self.insert(name, value, true)
    }

    /// Registers a non-trainable buffer (saved and loaded, never optimised).
    pub fn add_buffer(&mut self, name: &str, value: Tensor) -> Result<ParamId> {
        self.insert(name, value, false)
    }

    /// The id of `name`.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.index.get(name).map(|&i| ParamId(i))
    }

    /// The entry `id`.
    pub fn param(&self, id: ParamId) -> &Param {
        &self.params[id.0]
    }

    /// The value of `id`.
    pub fn value(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].value
    }

    /// Mutable value of `id` (optimisers, running statistics).
    pub fn value_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.params[id.0].value
    }

    /// The gradient of `id`.
    pub fn grad(&self, id: ParamId) -> &Tensor {
        &self.params[id.0].grad
    }

    /// Mutable gradient of `id` (a caller may write it, so it no longer counts as zeros for
    /// [`ParamStore::accumulate`]; the other entries keep their state).
    pub fn grad_mut(&mut self, id: ParamId) -> &mut Tensor {
        let p = &mut self.params[id.0];
        p.grad_is_zero = false;
        &mut p.grad
    }

    /// Adds `g` to the gradient of `id`. The first gradient after [`ParamStore::zero_grad`]
    /// is taken as is when it matches the gradient's shape, dtype and device (no pass over
    /// zeros; the tensor is shared copy-on-write, so later in-place updates of either side
    /// copy first); otherwise, and for every later one, `grad += g`.
    pub fn accumulate(&mut self, id: ParamId, g: &Tensor) -> Result<()> {
        let p = &mut self.params[id.0];
        let same = g.shape() == p.grad.shape()
            && g.dtype() == p.grad.dtype()
            && g.device() == p.grad.device();
        if p.grad_is_zero && same {
            p.grad = g.clone();
        } else {
            ops::axpy(&mut p.grad, 1.0, g)?;
        }
        p.grad_is_zero = false;
        Ok(())
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) -> Result<()> {
        for p in self.params.iter_mut().filter(|p| p.trainable) {
            p.grad = p.value.zeros_like()?;
            p.grad_is_zero = true;
        }
        Ok(())
    }

    /// Entries in registration order (stable across runs).
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Param)> {
        self.params.iter().enumerate().map(|(i, p)| (ParamId(i), p))
    }

    /// Mutable entries in registration order (a caller may write the gradients, so they no
    /// longer count as zeros for [`ParamStore::accumulate`]).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ParamId, &mut Param)> {
        self.params.iter_mut().enumerate().map(|(i, p)| {
            p.grad_is_zero = false;
            (ParamId(i), p)
        })
    }

    /// Number of entries (parameters and buffers).
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// Number of trainable scalars.
    pub fn num_trainable(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.value.numel())
            .sum()
    }

    /// Replaces the values of the trainable parameters, in store order (gradient checks
    /// perturb them as plain tensors); errors when the count differs.
    pub fn set_trainable_values(&mut self, values: &[Tensor]) -> Result<()> {
        let n = self.params.iter().filter(|p| p.trainable).count();
        if values.len() != n {
            return Err(Error::Config {
                key: "params".into(),
                msg: format!("{} values for {n} trainable parameters", values.len()),
            });
        }
        let slots = self.params.iter_mut().filter(|p| p.trainable);
        for (p, v) in slots.zip(values) {
            p.value = v.clone();
        }
        Ok(())
    }

    /// Converts every value and gradient to `dtype` (f64 for gradient checks).
    pub fn to_dtype(&mut self, dtype: DType) -> Result<()> {
        for p in &mut self.params {
            p.value = p.value.to_dtype(dtype)?;
            p.grad = p.grad.to_dtype(dtype)?;
        }
        Ok(())
    }

    /// Moves every value and gradient, parameters and buffers (BatchNorm running statistics,
    /// positional tables), to `device`. Layers read their parameters' device from the store,
    /// so a model runs where its store lives; inputs must be on the same device (ops on
    /// operands of different devices fail with `DeviceMismatch`, they never copy silently).
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        for p in &mut self.params {
            p.value = p.value.to_device(device)?;
            p.grad = p.grad.to_device(device)?;
        }
        Ok(())
    }

    /// The device of the first entry (`Cpu` for an empty store).
    pub fn device(&self) -> Device {
        self.params
            .first()
            .map_or(Device::Cpu, |p| p.value.device())
    }

    /// Errors naming the first value or gradient that is not on `device`.
    pub fn check_device(&self, device: Device) -> Result<()> {
        for p in &self.params {
            for (what, t) in [("value", &p.value), ("grad", &p.grad)] {
                if t.device() != device {
                    return Err(Error::Config {
                        key: format!("{}.{what}", p.name),
                        msg: format!("on {} but the model runs on {device}", t.device()),
                    });
                }
            }
        }
        Ok(())
    }

    /// Writes every value (parameters and buffers) to a safetensors file, atomically.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let bytes = serialize_safetensors(
            self.params.iter().map(|p| (p.name.as_str(), &p.value)),
            None,
        )?;
        Ok(hr_core::write_atomic(path, &bytes)?)
    }

    /// Loads values by name from a safetensors file. Shapes must match; every missing,
    /// unexpected and mis-shaped key is reported at once. Values keep the model's dtype.
    pub fn load_safetensors(&mut self, path: &Path, opts: &LoadOptions) -> Result<()> {
        let file = read_safetensors(path)?;
        let mut unexpected = Vec::new();
        let mut mis_shaped = Vec::new();
        let mut found = vec![false; self.params.len()];
        let mut updates = Vec::new();
        for (key, t) in &file.tensors {
            if opts
                .ignore_suffixes
                .iter()
                .any(|s| key.ends_with(s.as_str()))
            {
                continue;
            }
            let name = format!("{}{key}", opts.prefix);
            let Some(&i) = self.index.get(&name) else {
                unexpected.push(name);
                continue;
            };
            found[i] = true;
            let p = &self.params[i];
            if p.value.shape() != t.shape() {
                mis_shaped.push(MisShaped {
                    name,
                    expected: p.value.shape().to_vec(),
                    found: t.shape().to_vec(),
                });
                continue;
            }
            updates.push((i, t));
        }
        let missing: Vec<String> = if opts.allow_missing {
            Vec::new()
        } else {
            self.params
                .iter()
                .zip(&found)
                .filter(|(_, &f)| !f)
                .map(|(p, _)| p.name.clone())
                .collect()
        };
        if opts.allow_unexpected {
            unexpected.clear();
        }
        if !missing.is_empty() || !unexpected.is_empty() || !mis_shaped.is_empty() {
            return Err(Error::KeyMismatch {
                path: path.to_path_buf(),
                missing,
                unexpected,
                mis_shaped,
            });
        }
        for (i, t) in updates {
            let p = &mut self.params[i];
            p.value = t.to_dtype(p.value.dtype())?.to_device(p.value.device())?;
        }
        Ok(())
    }
}
