"""S4: Ceph RADOS Gateway (S3 API, SQLite DBStore) and a small Node.js app, one image (see README.md)."""
