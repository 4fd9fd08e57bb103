//! IANA numbers of IKEv2 (RFC 7296 §3, IANA "IKEv2 Parameters") as open
//! newtypes: every value of the field's width is representable, so a number
//! this crate does not know is carried, not rejected; the named constants are
//! the ones the engine acts on.

use std::fmt;

macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident($repr:ty) { $($(#[$cmeta:meta])* $cname:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $repr);

        impl $name {
            $($(#[$cmeta])* pub const $cname: $name = $name($value);)*

            /// The IANA name of a known value, `None` otherwise.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$cname => Some(stringify!($cname)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

open_enum! {
    /// RFC 7296 §3.1 "Exchange Type".
    ExchangeType(u8) {
        IKE_SA_INIT = 34,
        IKE_AUTH = 35,
        CREATE_CHILD_SA = 36,
        INFORMATIONAL = 37,
    }
}

open_enum! {
    /// RFC 7296 §3.2 "Next Payload" values.
    PayloadType(u8) {
        /// No Next Payload.
        NONE = 0,
        SA = 33,
        KE = 34,
        IDI = 35,
        IDR = 36,
        CERT = 37,
        CERTREQ = 38,
        AUTH = 39,
        NONCE = 40,
        NOTIFY = 41,
        DELETE = 42,
        VENDOR_ID = 43,
        TSI = 44,
        TSR = 45,
        /// Encrypted and Authenticated (SK).
        SK = 46,
        CP = 47,
        EAP = 48,
    }
}

open_enum! {
    /// RFC 7296 §3.3.1 "Protocol ID" of a proposal, notify or delete.
    ProtocolId(u8) {
        NONE = 0,
        IKE = 1,
        AH = 2,
        ESP = 3,
    }
}

open_enum! {
    /// RFC 7296 §3.3.2 "Transform Type".
    TransformType(u8) {
        ENCR = 1,
        PRF = 2,
        INTEG = 3,
        DH = 4,
        ESN = 5,
    }
}

open_enum! {
    /// RFC 7296 §3.5 "ID Type".
    IdType(u8) {
        ID_IPV4_ADDR = 1,
        ID_FQDN = 2,
        ID_RFC822_ADDR = 3,
        ID_IPV6_ADDR = 5,
        ID_DER_ASN1_DN = 9,
        ID_DER_ASN1_GN = 10,
        ID_KEY_ID = 11,
    }
}

open_enum! {
    /// RFC 7296 §3.8 "Auth Method".
    AuthMethod(u8) {
        RSA_DIGITAL_SIGNATURE = 1,
        SHARED_KEY_MESSAGE_INTEGRITY_CODE = 2,
        DSS_DIGITAL_SIGNATURE = 3,
        /// RFC 4754: ECDSA with SHA-256 on P-256.
        ECDSA_SHA256_P256 = 9,
        /// RFC 4754: ECDSA with SHA-384 on P-384.
        ECDSA_SHA384_P384 = 10,
        /// RFC 4754: ECDSA with SHA-512 on P-521.
        ECDSA_SHA512_P521 = 11,
        /// RFC 7427.
        DIGITAL_SIGNATURE = 14,
    }
}

open_enum! {
    /// RFC 7296 §3.10.1 "Notify Message Types", plus RFC 4555 (MOBIKE) §4.
    ///
    /// Values below 16384 are errors, the rest status types (§3.10.1).
    NotifyType(u16) {
        UNSUPPORTED_CRITICAL_PAYLOAD = 1,
        INVALID_IKE_SPI = 4,
        INVALID_MAJOR_VERSION = 5,
        INVALID_SYNTAX = 7,
        INVALID_MESSAGE_ID = 9,
        INVALID_SPI = 11,
        NO_PROPOSAL_CHOSEN = 14,
        INVALID_KE_PAYLOAD = 17,
        AUTHENTICATION_FAILED = 24,
        SINGLE_PAIR_REQUIRED = 34,
        NO_ADDITIONAL_SAS = 35,
        INTERNAL_ADDRESS_FAILURE = 36,
        FAILED_CP_REQUIRED = 37,
        TS_UNACCEPTABLE = 38,
        INVALID_SELECTORS = 39,
        /// RFC 4555 §4.
        UNACCEPTABLE_ADDRESSES = 40,
        /// RFC 4555 §4.
        UNEXPECTED_NAT_DETECTED = 41,
        TEMPORARY_FAILURE = 43,
        CHILD_SA_NOT_FOUND = 44,
        INITIAL_CONTACT = 16384,
        SET_WINDOW_SIZE = 16385,
        ADDITIONAL_TS_POSSIBLE = 16386,
        IPCOMP_SUPPORTED = 16387,
        NAT_DETECTION_SOURCE_IP = 16388,
        NAT_DETECTION_DESTINATION_IP = 16389,
        COOKIE = 16390,
        USE_TRANSPORT_MODE = 16391,
        HTTP_CERT_LOOKUP_SUPPORTED = 16392,
        REKEY_SA = 16393,
        ESP_TFC_PADDING_NOT_SUPPORTED = 16394,
        NON_FIRST_FRAGMENTS_ALSO = 16395,
        /// RFC 4555 §4.
        MOBIKE_SUPPORTED = 16396,
        /// RFC 4555 §4.
        ADDITIONAL_IP4_ADDRESS = 16397,
        /// RFC 4555 §4.
        ADDITIONAL_IP6_ADDRESS = 16398,
        /// RFC 4555 §4.
        NO_ADDITIONAL_ADDRESSES = 16399,
        /// RFC 4555 §4.
        UPDATE_SA_ADDRESSES = 16400,
        /// RFC 4555 §4.
        COOKIE2 = 16401,
        /// RFC 4555 §4.
        NO_NATS_ALLOWED = 16402,
        /// RFC 7383.
        IKEV2_FRAGMENTATION_SUPPORTED = 16430,
        /// RFC 7427.
        SIGNATURE_HASH_ALGORITHMS = 16431,
    }
}

impl NotifyType {
    /// RFC 7296 §3.10.1: "Types in the range 0 - 16383 are intended for
    /// reporting errors."
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }
}

open_enum! {
    /// RFC 7296 §3.13.1 "TS Type".
    TsType(u8) {
        TS_IPV4_ADDR_RANGE = 7,
        TS_IPV6_ADDR_RANGE = 8,
    }
}

open_enum! {
    /// RFC 7296 §3.15 "CFG Type".
    CfgType(u8) {
        CFG_REQUEST = 1,
        CFG_REPLY = 2,
        CFG_SET = 3,
        CFG_ACK = 4,
    }
}

/// RFC 7296 §3.3.2 Transform IDs used by this crate.
pub mod transform_id {
    /// ENCR_AES_GCM_16 (RFC 5282 / RFC 4106).
    pub const ENCR_AES_GCM_16: u16 = 20;
    /// ENCR_CHACHA20_POLY1305 (RFC 7634).
    pub const ENCR_CHACHA20_POLY1305: u16 = 28;
    /// PRF_HMAC_SHA2_256 (RFC 4868).
    pub const PRF_HMAC_SHA2_256: u16 = 5;
    /// PRF_HMAC_SHA2_384 (RFC 4868).
    pub const PRF_HMAC_SHA2_384: u16 = 6;
    /// PRF_HMAC_SHA2_512 (RFC 4868).
    pub const PRF_HMAC_SHA2_512: u16 = 7;
    /// 256-bit random ECP group (RFC 5903).
    pub const DH_ECP_256: u16 = 19;
    /// 384-bit random ECP group (RFC 5903).
    pub const DH_ECP_384: u16 = 20;
    /// Curve25519 (RFC 8031).
    pub const DH_CURVE25519: u16 = 31;
    /// No Extended Sequence Numbers.
    pub const ESN_NO: u16 = 0;
    /// Extended Sequence Numbers.
    pub const ESN_YES: u16 = 1;
    /// Transform attribute type "Key Length (in bits)" (§3.3.5).
    pub const ATTR_KEY_LENGTH: u16 = 14;
}
