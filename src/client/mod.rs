pub mod socks;
