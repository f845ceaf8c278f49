package dispatcher

// BackupDelay is backupDelay, for the tests of Backup.
const BackupDelay = backupDelay
