#!/usr/bin/env python3
"""The SQS walkthrough's queue on moto (S3E_MOTO_ENDPOINT, default
http://127.0.0.1:15000), through boto3 (installed with moto):

  sqs-queue.py create NAME    creates the queue (emptied when it exists)
  sqs-queue.py receive NAME   prints each message's attributes and body,
                              and deletes it
"""
import json
import os
import sys

import boto3

sqs = boto3.client(
    "sqs",
    endpoint_url=os.environ.get("S3E_MOTO_ENDPOINT", "http://127.0.0.1:15000"),
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
command, name = sys.argv[1], sys.argv[2]
url = sqs.create_queue(QueueName=name)["QueueUrl"]
if command == "create":
    sqs.purge_queue(QueueUrl=url)
    print(url)
elif command == "receive":
    out = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
    for m in out.get("Messages", []):
        attributes = {k: v["StringValue"] for k, v in m.get("MessageAttributes", {}).items()}
        print("attributes:", json.dumps(attributes, sort_keys=True))
        print(m["Body"])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
else:
    sys.exit(f"unknown command {command}: create or receive")
