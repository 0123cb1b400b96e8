"""The reference e-mail adapter: IMAP in, SMTP out, through the adapter SDK like any adapter (docs/adapters.md).

``mail_threads`` (which case a mail belongs to, and the Message-IDs we send), ``mail_drafts`` (a mail as a
contact draft), ``attachment_store`` (attachments kept sealed), ``imap_reader`` (the mailbox, read once per
mail), ``smtp_sender`` (a message as a mail, and what the SMTP server's answer means), ``mail_adapter`` (the
loop that ties them to the intake and the outbound feed; ``caseledger adapters run-mail``).
"""
