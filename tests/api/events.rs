//! Tests: events.
#[allow(unused_imports)]
use crate::helpers::*;
