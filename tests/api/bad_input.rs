//! Tests: bad_input.
#[allow(unused_imports)]
use crate::helpers::*;
