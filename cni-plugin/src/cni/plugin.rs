//! Placeholder: the amesh-cni plugin logic (being written).
