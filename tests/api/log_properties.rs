//! Tests: log_properties.
#[allow(unused_imports)] use crate::helpers::*;
