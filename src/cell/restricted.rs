//! Per-context messages: one enum per place a message is received, holding only the
//! commands legal there (the idea of arti's `restricted_msg!`).
//!
//! A context's parser refuses every other command with [`CellError::CommandNotAllowed`]
//! before reading the body, and its consumer matches the enum exhaustively: a command that
//! cannot arrive somewhere has no variant there, so no catch-all arm is needed to refuse it
//! and none can hide a command added later. Each enum converts to the full message type
//! ([`RelayMsg`], [`ChanMsg`]) and back (refusing what the context does not hold), which is
//! also how a consumer narrows one context into a smaller one.
//!
//! The contexts themselves are declared in [`super::relay_contexts`] and
//! [`super::chan_contexts`].

use super::chan_cmd::ChanCmd;
use super::chan_msg::ChanMsg;
use super::consts::CELL_BODY_LEN;
use super::error::{CellError, CellResult};
use super::relay_cmd::RelayCmd;
use super::relay_msg::RelayMsg;
use crate::bytes::Writer;

/// A relay message type a [`super::RelayCell`] can carry: [`RelayMsg`] (any command) or
/// one receiving context's enum.
pub trait RelayMessage: Sized + Into<RelayMsg> {
    /// The command byte of this message.
    fn cmd(&self) -> RelayCmd;

    /// Refuses `cmd` with [`CellError::CommandNotAllowed`] unless it is legal here.
    fn check(cmd: RelayCmd) -> CellResult<()>;

    /// Parses the `data` field of a relay body for `cmd`, refusing a command not legal
    /// here before reading any of `data`.
    fn parse_data(cmd: RelayCmd, data: &[u8]) -> CellResult<Self>;

    /// Encodes the `data` field.
    fn encode_data(&self, w: &mut Writer<'_>) -> CellResult<()>;

    /// Narrows into context `N` (e.g. the one a circuit's role allows), refusing a command
    /// `N` does not hold with [`CellError::CommandNotAllowed`].
    fn narrow<N: TryFrom<RelayMsg, Error = CellError>>(self) -> CellResult<N> {
        N::try_from(self.into())
    }
}

impl RelayMessage for RelayMsg {
    fn cmd(&self) -> RelayCmd {
        RelayMsg::cmd(self)
    }
    fn check(_cmd: RelayCmd) -> CellResult<()> {
        Ok(())
    }
    fn parse_data(cmd: RelayCmd, data: &[u8]) -> CellResult<Self> {
        RelayMsg::parse_data(cmd, data)
    }
    fn encode_data(&self, w: &mut Writer<'_>) -> CellResult<()> {
        RelayMsg::encode_data(self, w)
    }
}

/// A link message type a [`super::ChanCell`] can carry: [`ChanMsg`] (any command) or one
/// receiving context's enum.
pub trait ChanMessage: Sized + Into<ChanMsg> {
    /// The command byte of this message.
    fn cmd(&self) -> ChanCmd;

    /// Refuses `cmd` with [`CellError::CommandNotAllowed`] unless it is legal here.
    fn check(cmd: ChanCmd) -> CellResult<()>;

    /// Parses a body of exactly [`CELL_BODY_LEN`] bytes for `cmd`, refusing a command not
    /// legal here before reading the body.
    fn parse_body(cmd: ChanCmd, body: &[u8]) -> CellResult<Self>;

    /// Encodes the body into `out`.
    fn encode_body(&self, out: &mut [u8; CELL_BODY_LEN]) -> CellResult<()>;
}

impl ChanMessage for ChanMsg {
    fn cmd(&self) -> ChanCmd {
        ChanMsg::cmd(self)
    }
    fn check(_cmd: ChanCmd) -> CellResult<()> {
        Ok(())
    }
    fn parse_body(cmd: ChanCmd, body: &[u8]) -> CellResult<Self> {
        ChanMsg::parse_body(cmd, body)
    }
    fn encode_body(&self, out: &mut [u8; CELL_BODY_LEN]) -> CellResult<()> {
        ChanMsg::encode_body(self, out)
    }
}

/// Where each relay command's message sits in [`RelayMsg`], as a pattern or an expression
/// (`$m` binds or gives the payload): the onion-service ones are nested in
/// [`RelayMsg::Onion`], every other is the variant of the command's name.
macro_rules! relay_msg_variant {
    (EstablishIntro $m:ident) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::EstablishIntro($m))
    };
    (IntroEstablished) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::IntroEstablished)
    };
    (Introduce1 $m:ident) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::Introduce1($m))
    };
    (Introduce2 $m:ident) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::Introduce2($m))
    };
    (IntroduceAck $m:ident) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::IntroduceAck($m))
    };
    (EstablishRendezvous $m:ident) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::EstablishRendezvous($m))
    };
    (RendezvousEstablished) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::RendezvousEstablished)
    };
    (Rendezvous1 $m:ident) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::Rendezvous1($m))
    };
    (Rendezvous2 $m:ident) => {
        $crate::cell::RelayMsg::Onion($crate::cell::OnionMsg::Rendezvous2($m))
    };
    ($v:ident $m:ident) => {
        $crate::cell::RelayMsg::$v($m)
    };
    ($v:ident) => {
        $crate::cell::RelayMsg::$v
    };
}

/// Where each link command's message sits in [`ChanMsg`]: the variant of its name.
macro_rules! chan_msg_variant {
    ($v:ident $m:ident) => {
        $crate::cell::ChanMsg::$v($m)
    };
    ($v:ident) => {
        $crate::cell::ChanMsg::$v
    };
}

/// Declares a receiving context: an enum whose variants are named after the commands legal
/// there, the messages with a body first, then (after `;`) those without.
///
/// ```text
/// restricted_msg! {
///     /// What a relay accepts ...
///     pub enum AtRelay: RelayMsg ("at a relay") {
///         Begin(Begin), Data(Data);
///         Truncate, Drop
///     }
/// }
/// ```
///
/// Generates the enum, `SET` (the [`super::CmdSet`] of its commands, which the parser checks
/// the command byte against), `CONTEXT`, `cmd()`, the conversions to and from the full
/// message type, and the [`RelayMessage`] or [`ChanMessage`] impl whose parser refuses any
/// other command before reading the body.
macro_rules! restricted_msg {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: RelayMsg ($context:literal) {
            $( $v:ident($ty:ty) ),* $(,)? ;
            $( $u:ident ),* $(,)?
        }
    ) => {
        $crate::cell::restricted::restricted_msg!(@common
            [$(#[$meta])*] $name, RelayMsg, RelayCmd, relay_msg_variant, $context,
            [$( $v($ty) )*], [$( $u )*]
        );

        impl $crate::cell::restricted::RelayMessage for $name {
            fn cmd(&self) -> $crate::cell::RelayCmd {
                $name::cmd(self)
            }
            fn check(cmd: $crate::cell::RelayCmd) -> $crate::cell::CellResult<()> {
                Self::SET.check(cmd.code())
            }
            fn parse_data(
                cmd: $crate::cell::RelayCmd,
                data: &[u8],
            ) -> $crate::cell::CellResult<Self> {
                <Self as $crate::cell::restricted::RelayMessage>::check(cmd)?;
                Self::try_from($crate::cell::RelayMsg::parse_data(cmd, data)?)
            }
            fn encode_data(
                &self,
                w: &mut $crate::bytes::Writer<'_>,
            ) -> $crate::cell::CellResult<()> {
                $crate::cell::RelayMsg::from(self.clone()).encode_data(w)
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub enum $name:ident: ChanMsg ($context:literal) {
            $( $v:ident($ty:ty) ),* $(,)? ;
            $( $u:ident ),* $(,)?
        }
    ) => {
        $crate::cell::restricted::restricted_msg!(@common
            [$(#[$meta])*] $name, ChanMsg, ChanCmd, chan_msg_variant, $context,
            [$( $v($ty) )*], [$( $u )*]
        );

        impl $crate::cell::restricted::ChanMessage for $name {
            fn cmd(&self) -> $crate::cell::ChanCmd {
                $name::cmd(self)
            }
            fn check(cmd: $crate::cell::ChanCmd) -> $crate::cell::CellResult<()> {
                Self::SET.check(cmd.code())
            }
            fn parse_body(
                cmd: $crate::cell::ChanCmd,
                body: &[u8],
            ) -> $crate::cell::CellResult<Self> {
                <Self as $crate::cell::restricted::ChanMessage>::check(cmd)?;
                Self::try_from($crate::cell::ChanMsg::parse_body(cmd, body)?)
            }
            fn encode_body(
                &self,
                out: &mut [u8; $crate::cell::consts::CELL_BODY_LEN],
            ) -> $crate::cell::CellResult<()> {
                $crate::cell::ChanMsg::from(self.clone()).encode_body(out)
            }
        }
    };
    (@common
        [$($meta:tt)*] $name:ident, $any:ident, $cmd:ident, $lookup:ident, $context:literal,
        [$( $v:ident($ty:ty) )*], [$( $u:ident )*]
    ) => {
        $($meta)*
        // Messages hold their payloads inline like the full message types do: a relay body
        // boxed would cost an allocation per cell on the hot path.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $(
                #[doc = concat!("`", stringify!($v), "`.")]
                $v($ty),
            )*
            $(
                #[doc = concat!("`", stringify!($u), "`.")]
                $u,
            )*
        }

        impl $name {
            /// Where this context applies, as [`CellError::CommandNotAllowed`] names it.
            ///
            /// [`CellError::CommandNotAllowed`]: $crate::cell::CellError::CommandNotAllowed
            pub const CONTEXT: &'static str = $context;

            /// The commands legal here, as a set.
            pub const SET: $crate::cell::CmdSet = $crate::cell::CmdSet::new(
                &[$( $crate::cell::$cmd::$v.code(), )* $( $crate::cell::$cmd::$u.code(), )*],
                $context,
            );

            /// The command byte of this message.
            pub fn cmd(&self) -> $crate::cell::$cmd {
                match self {
                    $( $name::$v(_) => $crate::cell::$cmd::$v, )*
                    $( $name::$u => $crate::cell::$cmd::$u, )*
                }
            }
        }

        impl From<$name> for $crate::cell::$any {
            fn from(msg: $name) -> Self {
                match msg {
                    $( $name::$v(m) => $crate::cell::restricted::$lookup!($v m), )*
                    $( $name::$u => $crate::cell::restricted::$lookup!($u), )*
                }
            }
        }

        impl TryFrom<$crate::cell::$any> for $name {
            type Error = $crate::cell::CellError;

            /// Refuses a message of a command this context does not hold.
            fn try_from(msg: $crate::cell::$any) -> Result<Self, Self::Error> {
                match msg {
                    $( $crate::cell::restricted::$lookup!($v m) => Ok($name::$v(m)), )*
                    $( $crate::cell::restricted::$lookup!($u) => Ok($name::$u), )*
                    other => Err($crate::cell::CellError::CommandNotAllowed {
                        command: other.cmd().code(),
                        context: $context,
                    }),
                }
            }
        }
    };
}

pub(crate) use chan_msg_variant;
pub(crate) use relay_msg_variant;
pub(crate) use restricted_msg;
