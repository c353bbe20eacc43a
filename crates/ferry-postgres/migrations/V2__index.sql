-- ferry's index (the Index side of the backend seam) and the bookkeeping of content held in
-- S3-compatible object storage (docs/SCALING.md "The index and content"). Every u64 is a
-- BIGINT (above i64::MAX is refused, never wrapped); names compare byte-wise (COLLATE "C").

-- The current record of every source: its live version, or a tombstone (deleted, size 0,
-- hash of zeros).
CREATE TABLE ferry_heads (
    source      TEXT COLLATE "C" PRIMARY KEY,
    version     BIGINT  NOT NULL CHECK (version >= 1),
    deleted     BOOLEAN NOT NULL,
    size        BIGINT  NOT NULL CHECK (size >= 0),
    hash        BYTEA   NOT NULL CHECK (length(hash) = 32),
    modified    BIGINT  NOT NULL CHECK (modified >= 0),
    by_name     TEXT COLLATE "C" NOT NULL,
    mtime       BIGINT  CHECK (mtime >= 0),
    executable  BOOLEAN NOT NULL
);

-- The kept (live) versions of every source; pruned to keep_versions by each commit.
CREATE TABLE ferry_versions (
    source      TEXT COLLATE "C" NOT NULL,
    version     BIGINT  NOT NULL CHECK (version >= 1),
    size        BIGINT  NOT NULL CHECK (size >= 0),
    hash        BYTEA   NOT NULL CHECK (length(hash) = 32),
    modified    BIGINT  NOT NULL CHECK (modified >= 0),
    by_name     TEXT COLLATE "C" NOT NULL,
    mtime       BIGINT  CHECK (mtime >= 0),
    executable  BOOLEAN NOT NULL,
    PRIMARY KEY (source, version)
);
-- Usage per principal is summed from the kept versions through this index.
CREATE INDEX ferry_versions_by ON ferry_versions (by_name) INCLUDE (size);

-- The change log's counter: one row, locked by every write that logs a change, so sequence
-- numbers are given in commit order with no gap (a sequence object would give them in
-- start order, and a reader could pass a number whose transaction commits later).
CREATE TABLE ferry_log (
    one         BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    last_seq    BIGINT  NOT NULL CHECK (last_seq >= 0)
);
INSERT INTO ferry_log (last_seq) VALUES (0);

CREATE TABLE ferry_changes (
    seq         BIGINT  PRIMARY KEY CHECK (seq >= 1),
    source      TEXT COLLATE "C" NOT NULL,
    version     BIGINT  NOT NULL,
    deleted     BOOLEAN NOT NULL,
    size        BIGINT  NOT NULL,
    hash        BYTEA   NOT NULL,
    modified    BIGINT  NOT NULL,
    by_name     TEXT COLLATE "C" NOT NULL
);

-- Visible content: one row per hash that a kept version references, with the number of
-- kept versions referencing it (never 0: the row goes with the last reference), the object
-- holding its bytes, and its chunk list once computed (hash then u32 BE length per chunk).
CREATE TABLE ferry_blobs (
    hash        BYTEA   PRIMARY KEY CHECK (length(hash) = 32),
    size        BIGINT  NOT NULL CHECK (size >= 0),
    object      TEXT COLLATE "C" NOT NULL UNIQUE,
    refs        BIGINT  NOT NULL CHECK (refs >= 1),
    chunks      BYTEA
);

-- Objects no row references any more (pruned, deleted, or a duplicate of content already
-- held), removed by the sweep once `since` is older than its grace (open readers finish).
CREATE TABLE ferry_dead_objects (
    object      TEXT COLLATE "C" PRIMARY KEY,
    since       TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Uploads in progress. Bytes reach the object store as multipart parts of a fixed size
-- (`ferry_upload_parts`, one S3 multipart upload per row once the first part is full); the
-- bytes after the last full part are held here (`ferry_upload_tail`) until they make one.
-- `holder` names the open handle ("instance:token"); `held_at` is refreshed by its writes,
-- and a holder silent for longer than the lease no longer counts.
CREATE TABLE ferry_uploads (
    key         TEXT COLLATE "C" PRIMARY KEY,
    touched     BIGINT  NOT NULL CHECK (touched >= 0),
    object      TEXT COLLATE "C" NOT NULL,
    multipart   TEXT,
    parts_bytes BIGINT  NOT NULL DEFAULT 0 CHECK (parts_bytes >= 0),
    holder      TEXT,
    held_at     TIMESTAMPTZ
);
CREATE TABLE ferry_upload_parts (
    key         TEXT COLLATE "C" NOT NULL REFERENCES ferry_uploads (key) ON DELETE CASCADE,
    n           INTEGER NOT NULL CHECK (n >= 0),
    etag        TEXT    NOT NULL,
    PRIMARY KEY (key, n)
);
CREATE TABLE ferry_upload_tail (
    key         TEXT COLLATE "C" NOT NULL REFERENCES ferry_uploads (key) ON DELETE CASCADE,
    n           INTEGER NOT NULL CHECK (n >= 0),
    bytes       BYTEA   NOT NULL,
    PRIMARY KEY (key, n)
);

-- Content staged for a commit (a finished upload, a small content): its object exists or is
-- being written, no version references it yet. A commit removes the row in its transaction;
-- the sweep removes rows older than its grace first, so a commit of content swept meanwhile
-- fails instead of referencing a missing object.
CREATE TABLE ferry_staged (
    object      TEXT COLLATE "C" PRIMARY KEY,
    since       TIMESTAMPTZ NOT NULL DEFAULT now()
);
