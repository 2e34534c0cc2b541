//! Tests: as_of (see the issue-3 slices).
