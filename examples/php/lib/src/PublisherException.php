<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * RedisPublisher could not publish: Redis unreachable or timed out, AUTH or SELECT refused, an
 * error reply, or a reply that is not RESP. The message says which, with Redis's own words.
 */
final class PublisherException extends ClientException
{
}
