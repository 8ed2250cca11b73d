-- The processes and workers that use a grant (a token-store key): a row each,
-- renewed while the process lives and expired by the database's clock when
-- it dies. The last holder to leave ends the grant; while it does, an
-- exclusive advisory lock on the key keeps newcomers waiting.
CREATE TABLE ionflow_grant_holders (
    key        text NOT NULL,
    holder     text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (key, holder)
);
