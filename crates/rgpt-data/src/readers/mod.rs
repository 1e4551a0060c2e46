//! Readers for the public datasets as they are published. Large JSON
//! arrays (Visual Genome, LLaVA's conversations) are streamed element by
//! element ([`for_each_in_json_array`]); COCO-format files are read into
//! typed records straight from the file, never as a text copy or a
//! `serde_json::Value` tree.
pub mod coco;
pub mod llava;
pub mod pope;
pub mod refcoco;
pub mod vg;

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::marker::PhantomData;
use std::path::Path;

use serde::de::{DeserializeOwned, DeserializeSeed, SeqAccess, Visitor};

use crate::DataError;

pub(crate) fn open(path: &Path) -> Result<BufReader<File>, DataError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a whole JSON file into `T`, naming the file in errors.
pub(crate) fn read_json<T: DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, DataError> {
    serde_json::from_reader(open(path)?).map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

/// Calls `each` on every element of the top-level JSON array in `path`,
/// one element in memory at a time. `each` returning an error stops the
/// read with that error.
pub fn for_each_in_json_array<T, F>(
    path: &Path,
    what: &'static str,
    each: F,
) -> Result<(), DataError>
where
    T: DeserializeOwned,
    F: FnMut(T) -> Result<(), DataError>,
{
    let mut de = serde_json::Deserializer::from_reader(open(path)?);
    let mut failure = None;
    let seed = ArraySeed {
        each,
        failure: &mut failure,
        _marker: PhantomData,
    };
    let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
    if let Some(e) = failure {
        return Err(e);
    }
    parsed.map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        what,
        message: e.to_string(),
    })
}

struct ArraySeed<'f, T, F> {
    each: F,
    failure: &'f mut Option<DataError>,
    _marker: PhantomData<T>,
}

impl<'de, T, F> DeserializeSeed<'de> for ArraySeed<'_, T, F>
where
    T: DeserializeOwned,
    F: FnMut(T) -> Result<(), DataError>,
{
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T, F> Visitor<'de> for ArraySeed<'_, T, F>
where
    T: DeserializeOwned,
    F: FnMut(T) -> Result<(), DataError>,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<T>()? {
            if let Err(e) = (self.each)(item) {
                *self.failure = Some(e);
                return Err(serde::de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}
