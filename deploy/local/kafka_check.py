#!/usr/bin/env python3
"""Produce a few messages to a topic and consume them back (confluent-kafka), for selftest.sh.

Usage: kafka_check.py --brokers 127.0.0.1:19092 --topic NAME [--count 10] [--timeout 30]
Exits 0 when every produced message was consumed back, 1 otherwise. Prints timings.
"""
import argparse
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    run = uuid.uuid4().hex[:8]
    sent = {f"{run}-{i}".encode() for i in range(args.count)}

    t0 = time.monotonic()
    errors = []
    producer = Producer({"bootstrap.servers": args.brokers, "acks": "all", "linger.ms": 5})
    for value in sorted(sent):
        producer.produce(
            args.topic,
            key=value[-1:],
            value=value,
            on_delivery=lambda err, _msg: errors.append(err) if err else None,
        )
    left = producer.flush(args.timeout)
    if left or errors:
        print(f"produce failed: {left} undelivered, errors {errors[:3]}", file=sys.stderr)
        return 1
    t_produce = time.monotonic() - t0

    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": f"selftest-{run}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
        }
    )
    consumer.subscribe([args.topic])
    got = set()
    deadline = time.monotonic() + args.timeout
    try:
        while not sent <= got and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.add(msg.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    t_total = time.monotonic() - t0
    missing = sent - got
    if missing:
        print(f"consume failed: {len(missing)} of {len(sent)} messages not seen", file=sys.stderr)
        return 1
    print(f"kafka ok: {len(sent)} messages produced in {t_produce * 1000:.0f} ms, "
          f"consumed back by {t_total * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
