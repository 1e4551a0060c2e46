//! The synthetic region world (being written).
