-- ferry's account data (the Accounts side of the backend seam), as a server folder's
-- clients.toml, users.toml, invites.toml and sessions.toml hold it, plus the login-failure
-- state that a single server keeps in memory. Every u64 of the Rust side is a BIGINT here
-- (writes above i64::MAX are refused, never wrapped). Names and IDs compare byte-wise
-- (COLLATE "C"), as the files' BTreeMaps do.

-- The client registry: one row per issued client.
CREATE TABLE ferry_clients (
    name        TEXT COLLATE "C" PRIMARY KEY,
    epoch       BIGINT  NOT NULL CHECK (epoch >= 1),
    attributes  JSONB   NOT NULL,
    issued      BIGINT  NOT NULL CHECK (issued >= 0),
    revoked     BOOLEAN NOT NULL DEFAULT false
);

-- Generations of user records: never given twice, removed users' included.
CREATE SEQUENCE ferry_user_generation AS BIGINT MINVALUE 1 START 1 NO CYCLE;

-- Users: the OPAQUE registration record (its base64 text as users.toml holds it, stored as
-- bytes so no server encoding can touch it) and its Argon2id parameters.
CREATE TABLE ferry_users (
    name        TEXT COLLATE "C" PRIMARY KEY,
    attributes  JSONB   NOT NULL,
    record      BYTEA   NOT NULL,
    ksf_m_kib   BIGINT  NOT NULL CHECK (ksf_m_kib BETWEEN 0 AND 4294967295),
    ksf_t       BIGINT  NOT NULL CHECK (ksf_t BETWEEN 0 AND 4294967295),
    ksf_p       BIGINT  NOT NULL CHECK (ksf_p BETWEEN 0 AND 4294967295),
    created     BIGINT  NOT NULL CHECK (created >= 0),
    generation  BIGINT  NOT NULL
);

-- The latest invite per name.
CREATE TABLE ferry_invites (
    name        TEXT COLLATE "C" PRIMARY KEY,
    serial      BIGINT  NOT NULL CHECK (serial >= 1),
    attributes  JSONB   NOT NULL,
    expires     BIGINT  NOT NULL CHECK (expires >= 0),
    spent       BOOLEAN NOT NULL DEFAULT false
);

-- Sessions by hex ID. `by_password` is whether a password login opened it (from `origin`,
-- decided by SessionEntry::opened_by_password when stored); `ends` is the first second at
-- which it is no longer live (the earlier of its absolute end and its idle end).
CREATE TABLE ferry_sessions (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL,
    attributes  JSONB   NOT NULL,
    origin      TEXT    NOT NULL,
    by_password BOOLEAN NOT NULL,
    secret      BYTEA   NOT NULL CHECK (length(secret) = 32),
    created     BIGINT  NOT NULL CHECK (created >= 0),
    last_used   BIGINT  NOT NULL CHECK (last_used >= 0),
    idle_secs   BIGINT  NOT NULL CHECK (idle_secs >= 0),
    expires     BIGINT  NOT NULL CHECK (expires >= 0),
    ends        NUMERIC GENERATED ALWAYS AS
                    (LEAST(expires::numeric, last_used::numeric + idle_secs::numeric)) STORED
);
CREATE INDEX ferry_sessions_by_name ON ferry_sessions (name, last_used, created, id);
CREATE INDEX ferry_sessions_by_end ON ferry_sessions (ends);

-- Failed logins by key (an account or an address). `stale_after` is when the row no longer
-- matters under the policy it was written with (unlocked and out of its window): such rows
-- are removed a few at a time, so the table stays bounded by the keys that are live.
CREATE TABLE ferry_logins (
    key          TEXT COLLATE "C" PRIMARY KEY,
    failures     BIGINT NOT NULL CHECK (failures BETWEEN 0 AND 4294967295),
    first        BIGINT NOT NULL CHECK (first >= 0),
    locked_until BIGINT NOT NULL CHECK (locked_until >= 0),
    stale_after  BIGINT NOT NULL
);
CREATE INDEX ferry_logins_by_staleness ON ferry_logins (stale_after);
