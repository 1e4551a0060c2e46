use std::ops::Range;

use crate::Dtype;

/// Where one tensor's elements lie inside a memory-mapped file.
///
/// `bytes` is the whole storage the tensor views (for PyTorch archives a
/// storage can be shared by several tensors); `shape`, `strides` and
/// `storage_offset` are in elements, as in `torch.as_strided`.
#[derive(Debug, Clone)]
pub(crate) struct RawTensor {
    pub dtype: Dtype,
    pub shape: Vec<i64>,
    pub strides: Vec<i64>,
    pub storage_offset: i64,
    pub bytes: Range<usize>,
}

impl RawTensor {
    pub fn contiguous(dtype: Dtype, shape: Vec<i64>, bytes: Range<usize>) -> Self {
        let mut strides = vec![1i64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        RawTensor {
            dtype,
            shape,
            strides,
            storage_offset: 0,
            bytes,
        }
    }

    /// Bytes of the elements the view addresses (not of its whole storage).
    pub fn byte_len(&self) -> usize {
        self.shape.iter().product::<i64>() as usize * self.dtype.size_in_bytes()
    }

    /// Whether every element the view addresses lies inside `bytes`.
    pub fn in_bounds(&self) -> bool {
        let elem = self.dtype.size_in_bytes() as i64;
        let storage_len = (self.bytes.end - self.bytes.start) as i64 / elem;
        if self.shape.contains(&0) {
            return self.storage_offset <= storage_len;
        }
        let last = self.storage_offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<i64>();
        self.storage_offset >= 0 && last < storage_len
    }
}
