-- 082: agents.command_token encrypted at rest (collector/fleet/tokenkey.py, docs/security.md).
--
-- The column becomes bytes: VERSION 0x01 + nonce + AES-256-GCM ciphertext, sealed with the key
-- file DATA_DIR/command-token.key, which is never in the database. SQL has no key, so rows
-- recorded before this migration keep their plaintext token's bytes here; the collector seals
-- and rewrites each one when it first reads it (a token never starts with byte 0x01).
ALTER TABLE agents DROP CONSTRAINT agents_command_token_check;
ALTER TABLE agents
    ALTER COLUMN command_token TYPE bytea USING convert_to(command_token, 'UTF8');
ALTER TABLE agents ADD CONSTRAINT agents_command_token_check CHECK (length(command_token) >= 32);
