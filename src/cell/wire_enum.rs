//! `wire_enum!`: a one-byte enumeration with a strict decoder.
//!
//! Every code field on the wire (commands, reasons, address types) is a closed set: an
//! unlisted value is an error, never a catch-all variant, so a new value can only be added
//! by a deliberate protocol change.

/// Declares a `#[repr(u8)]` enum with `code()` and a strict `from_code()`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($field:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value ),+
        }

        impl $name {
            /// Every variant, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The byte that encodes this value.
            pub const fn code(self) -> u8 {
                self as u8
            }

            /// Decodes a byte, refusing values outside the enumeration.
            pub fn from_code(code: u8) -> $crate::cell::CellResult<Self> {
                match code {
                    $( $value => Ok($name::$variant), )+
                    other => Err($crate::cell::CellError::BadValue {
                        field: $field,
                        value: u64::from(other),
                    }),
                }
            }
        }
    };
}

pub(crate) use wire_enum;
