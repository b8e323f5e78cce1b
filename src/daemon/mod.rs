//! saslgated: the saslauthd drop-in (being written).
