//! Domain enums and the acting user.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::TenantId;

macro_rules! domain_enum {
    ($(#[$meta:meta])* $name:ident, $pg:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, async_graphql::Enum,
                 utoipa::ToSchema)]
        #[sqlx(type_name = $pg, rename_all = "snake_case")]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::error::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(crate::error::Error::validation(
                        $pg,
                        format!("must be one of: {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }
    };
}

domain_enum!(
    /// A member's role in a tenant.
    Role, "member_role" {
        /// Everything, including billing and other owners.
        Owner => "owner",
        /// Venues, stations, staff.
        Manager => "manager",
        /// Reads the tenant; runs the floor.
        Staff => "staff",
    }
);

domain_enum!(
    /// What a station is.
    StationKind, "station_kind" {
        Pc => "pc",
        Console => "console",
        Arcade => "arcade",
        KaraokeRoom => "karaoke_room",
        EvCharger => "ev_charger",
        PowerbankCabinet => "powerbank_cabinet",
        Kiosk => "kiosk",
    }
);

domain_enum!(
    /// How a station is switched on and off.
    StationControl, "station_control" {
        /// A PC agent speaking the seed 000 WebSocket protocol.
        Agent => "agent",
        /// A Shelly smart plug (Gen1 HTTP or Gen2 RPC).
        Shelly => "shelly",
        /// A Tasmota smart plug over MQTT.
        Tasmota => "tasmota",
        /// A MikroTik router blocking a MAC or a port.
        Mikrotik => "mikrotik",
        /// An OCPP charge point.
        Ocpp => "ocpp",
        /// Staff switch it by hand.
        Manual => "manual",
        /// A powerbank cabinet speaking the open cabinet protocol over the venue's MQTT broker, through the bridge.
        Cabinet => "cabinet",
    }
);

domain_enum!(
    /// A station's (or connector's) last known state.
    StationStatus, "station_status" {
        /// Out of a session and cannot be reached: its bridge or its charger is offline, or its device did not
        /// answer the bridge's last reading.
        Offline => "offline",
        /// Out of a session and can be reached (a manual station always can).
        Online => "online",
        InSession => "in_session",
        /// Taken out of use by staff.
        Maintenance => "maintenance",
    }
);

impl Role {
    /// Owners and managers manage the tenant; staff read it.
    pub fn can_manage(self) -> bool {
        matches!(self, Role::Owner | Role::Manager)
    }
}

/// A patron signed in to its own account (the patron app): it sees only its own sessions, wallet and cards.
#[derive(Debug, Clone)]
pub struct PatronActor {
    pub tenant: TenantId,
    pub patron_id: Uuid,
    pub request_id: Option<String>,
    /// Where the request came from (set by the API; `None` elsewhere): the sign-in throttle keys on it.
    pub client: RequestClient,
}

/// Whoever a valid access token speaks for.
#[derive(Debug, Clone)]
pub enum Principal {
    Member(Actor),
    Patron(PatronActor),
}

impl Principal {
    pub fn tenant(&self) -> TenantId {
        match self {
            Self::Member(a) => a.tenant,
            Self::Patron(p) => p.tenant,
        }
    }
}

/// Who is acting: an authenticated member of one tenant, with the request it acts in.
#[derive(Debug, Clone)]
pub struct Actor {
    pub tenant: TenantId,
    pub user_id: Uuid,
    pub role: Role,
    pub request_id: Option<String>,
    /// The venues this member may see and act in; `None` is every venue (always for owners).
    pub venues: Option<Vec<Uuid>>,
    /// Where the request came from, for the audit log (set by the API; `None` elsewhere).
    pub client: RequestClient,
}

/// The client side of a request, as the audit log records it.
#[derive(Debug, Clone, Default)]
pub struct RequestClient {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

impl Actor {
    /// Fails with `forbidden` unless the actor may manage the tenant.
    pub fn require_manager(&self) -> crate::error::Result<()> {
        if self.role.can_manage() {
            Ok(())
        } else {
            Err(crate::error::Error::Forbidden(
                "this needs the owner or manager role",
            ))
        }
    }

    /// Whether the member may see `venue` (owners and unscoped members see every venue).
    pub fn sees_venue(&self, venue: Uuid) -> bool {
        self.venues.as_ref().is_none_or(|v| v.contains(&venue))
    }

    /// `not_found` (named `what`) unless the member may see `venue`: an object of another venue is answered as
    /// one of another tenant would be.
    pub fn check_venue(&self, venue: Uuid, what: &'static str) -> crate::error::Result<()> {
        if self.sees_venue(venue) {
            Ok(())
        } else {
            Err(crate::error::Error::NotFound(what))
        }
    }

    /// The venue list to bind into a query (`$n::uuid[] is null or venue_id = any($n)`).
    pub fn venue_filter(&self) -> Option<&[Uuid]> {
        self.venues.as_deref()
    }
}
