//! Wire format: fixed-size link cells and relay messages (parse and encode only, no I/O).

pub mod consts;
