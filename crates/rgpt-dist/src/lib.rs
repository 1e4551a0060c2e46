//! Distributed training: process groups, data-parallel gradient reduction and
//! sharded data loading, so `rgpt-train` runs unchanged on one or many GPUs.
