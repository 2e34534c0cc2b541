//! Tests: organization_domains.
#[allow(unused_imports)]
use crate::helpers::*;
