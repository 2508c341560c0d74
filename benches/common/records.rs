//! Realistic MinIO records for the target benches.

use s3_event::core::EventRecord;

/// `n` MinIO `s3:ObjectCreated:Put` records (about 900 bytes of JSON each).
pub fn records(n: usize) -> Vec<EventRecord> {
    (0..n)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "eventVersion": "2.0",
                "eventSource": "minio:s3",
                "awsRegion": "",
                "eventTime": "2025-06-01T12:00:00.000Z",
                "eventName": "s3:ObjectCreated:Put",
                "userIdentity": {"principalId": "minioadmin"},
                "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8",
                    "x-amz-request-id": format!("1842FA0B5E3A{i:08X}"),
                    "x-minio-deployment-id": "e7d1b1d2-3b4c-4d5e-8f90-a1b2c3d4e5f6",
                    "x-minio-origin-endpoint": "http://127.0.0.1:9000"
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "Config",
                    "bucket": {"name": "images", "ownerIdentity": {"principalId": "minioadmin"}, "arn": "arn:aws:s3:::images"},
                    "object": {
                        "key": format!("tenant-{:02}/2025/06/01/object-{i}.jpg", i % 20),
                        "size": 52_341,
                        "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                        "contentType": "image/jpeg",
                        "userMetadata": {"content-type": "image/jpeg"},
                        "sequencer": format!("1842FA0B5E{i:08X}")
                    }
                },
                "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"}
            }))
            .expect("a bench record deserializes")
        })
        .collect()
}
