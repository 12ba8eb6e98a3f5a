//! berth network driver none: a sandbox with loopback only
