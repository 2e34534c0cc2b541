//! Tests: stream (see the issue-3 slices).
