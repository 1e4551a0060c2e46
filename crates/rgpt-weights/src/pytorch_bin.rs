//! PyTorch `torch.save` zip archives (`pytorch_model.bin`), read without Python.
use std::path::Path;

use crate::raw::RawTensor;
use crate::WeightsError;

/// Lists the tensors of a `torch.save`d state dict held in `bytes`.
pub(crate) fn read_tensors(path: &Path, _bytes: &[u8]) -> Result<Vec<(String, RawTensor)>, WeightsError> {
    Err(WeightsError::TorchBin {
        path: path.to_path_buf(),
        message: "PyTorch .bin checkpoints are not supported yet".into(),
    })
}
