//! Converters from source layouts to the dataset format.
