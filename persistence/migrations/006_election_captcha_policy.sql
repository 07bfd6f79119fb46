-- Per-election CAPTCHA policy on votes: off, always, or only when an anti-fraud rule flags the
-- vote (on_risk). Existing elections keep working as they did: off.
ALTER TABLE elections
  ADD COLUMN captcha_policy text NOT NULL DEFAULT 'off' CHECK (captcha_policy IN ('off', 'always', 'on_risk'));
