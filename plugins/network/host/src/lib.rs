//! berth network driver host: the sandbox shares the host's network namespace
