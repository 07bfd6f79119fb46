-- Undrain (issue 13): an operator ends a drain; the node receives shards again.
ALTER TABLE cluster_operations DROP CONSTRAINT cluster_operations_kind_check;
ALTER TABLE cluster_operations ADD CONSTRAINT cluster_operations_kind_check CHECK (kind IN ('move', 'drain', 'undrain', 'balance'));
