#!/usr/bin/env python3
"""The SQS source walkthrough's bucket on moto (S3E_MOTO_ENDPOINT, default
http://127.0.0.1:15000), through boto3 (installed with moto):

  s3-bucket.py notify BUCKET QUEUE   creates the queue (emptied when it
                                     exists) and the bucket, and has the
                                     bucket notify the queue of every
                                     created and removed object
  s3-bucket.py put BUCKET KEY        puts an object
  s3-bucket.py delete BUCKET KEY     deletes it
"""
import os
import sys

import boto3

options = dict(
    endpoint_url=os.environ.get("S3E_MOTO_ENDPOINT", "http://127.0.0.1:15000"),
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
s3 = boto3.client("s3", **options)
sqs = boto3.client("sqs", **options)
command, bucket = sys.argv[1], sys.argv[2]
if command == "notify":
    url = sqs.create_queue(QueueName=sys.argv[3])["QueueUrl"]
    sqs.purge_queue(QueueUrl=url)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}
            ]
        },
    )
    print(f"{bucket} notifies {url}")
elif command == "put":
    s3.put_object(Bucket=bucket, Key=sys.argv[3], Body=b"\xff\xd8\xff")
elif command == "delete":
    s3.delete_object(Bucket=bucket, Key=sys.argv[3])
else:
    sys.exit(f"unknown command {command}: notify, put or delete")
