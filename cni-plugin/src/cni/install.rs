//! Placeholder: the CNI config installer (being written).
