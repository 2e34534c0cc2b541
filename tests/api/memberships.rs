//! Tests: memberships.
#[allow(unused_imports)]
use crate::helpers::*;
