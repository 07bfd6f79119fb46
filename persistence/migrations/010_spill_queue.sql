-- Spill queue bookkeeping (actors/groupCommit.ts, persistence/spillDrain.ts).
--
-- vote_batches gains what became of each batch id:
--   committed  stored by the group commit (every row before this migration)
--   drained    stored by the drainer from the spill queue
--   abandoned  stored by nobody, and never to be: Journal.wasCommitted writes this row when it
--              finds no batch, so a commit of that id still running (given up on by the client)
--              fails on the primary key, and the drainer skips a queued copy of it.
-- The batch id stays the primary key, so whichever of the three writes first wins, once.
ALTER TABLE vote_batches
  ADD COLUMN outcome text NOT NULL DEFAULT 'committed' CHECK (outcome IN ('committed', 'drained', 'abandoned'));
