//! Tests: users.
#[allow(unused_imports)]
use crate::helpers::*;
