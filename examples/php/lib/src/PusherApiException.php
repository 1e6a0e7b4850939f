<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The Pusher HTTP API answered with a status other than 200 (as the Pusher SDKs, any other
 * status is an error). $body is the API's plain-text explanation, e.g. "Timestamp expired: ...".
 */
final class PusherApiException extends ClientException
{
    public function __construct(
        public readonly int $status,
        public readonly string $body,
        string $request,
    ) {
        parent::__construct(sprintf('wsbridge Pusher API %s: %d %s', $request, $status, substr(trim($body), 0, 500)), $status);
    }
}
