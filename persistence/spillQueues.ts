// Which spill queue a node uses (LIVEVOTE_SPILL_QUEUE): SQS when several nodes share the
// database (a new owner of a shard must be able to drain what the old one spilled), the file
// queue in the data dir otherwise (embedded mode, or one node), or none.
import type { SpillQueue } from '../actors/ports.ts';
import type { SpillConfig } from '../infra/config.ts';
import { openFileSpillQueue } from './fileSpillQueue.ts';
import { createSqsSpillQueue } from './sqsSpillQueue.ts';

export async function openSpillQueue(config: SpillConfig): Promise<SpillQueue | null> {
  switch (config.kind) {
    case 'off':
      return null;
    case 'file':
      return openFileSpillQueue({ dir: config.dir });
    case 'sqs':
      if (config.sqsQueueUrl === undefined || config.sqsDeadLetterQueueUrl === undefined) throw new Error('the SQS spill queue needs both queue URLs');
      return createSqsSpillQueue({ queueUrl: config.sqsQueueUrl, deadLetterQueueUrl: config.sqsDeadLetterQueueUrl });
  }
}
