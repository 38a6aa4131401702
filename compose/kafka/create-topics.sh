#!/bin/bash
# Creates taskfold's topics on the compose cluster, once: replication factor 3,
# min.insync.replicas 2, and the partitions and configs of taskfold/broker/topics.py
# (`topic_configs`). tests/unit/test_compose.py reads the `create` lines below and
# checks them against that module, so change both together.
set -euo pipefail

BOOTSTRAP="kafka-1:9092,kafka-2:9092,kafka-3:9092"
REPLICATION_FACTOR=3
MIN_INSYNC_REPLICAS=2

create() {
    local topic=$1 partitions=$2
    shift 2
    local configs=(--config "min.insync.replicas=${MIN_INSYNC_REPLICAS}")
    for config in "$@"; do
        configs+=(--config "$config")
    done
    /opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$topic" --partitions "$partitions" --replication-factor "$REPLICATION_FACTOR" "${configs[@]}"
}

# topic              partitions  configs (as taskfold/broker/topics.py:topic_configs)
create taskfold.events     12 cleanup.policy=delete retention.ms=-1 retention.bytes=-1 max.message.bytes=1048588
create taskfold.heartbeats 12 cleanup.policy=compact segment.ms=3600000 min.cleanable.dirty.ratio=0.1 max.message.bytes=1048588
create taskfold.progress   12 cleanup.policy=delete retention.ms=604800000 max.message.bytes=1048588
create taskfold.poison     12 cleanup.policy=delete retention.ms=2592000000 max.message.bytes=1048588

/opt/kafka/bin/kafka-topics.sh --bootstrap-server "$BOOTSTRAP" --describe --topic 'taskfold\..*'
