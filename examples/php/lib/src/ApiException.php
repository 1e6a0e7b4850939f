<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * The push API answered with an error: {"error": "...", "detail": "..."} and a status. The
 * subclass says which error; $error and $detail carry the API's own words.
 */
class ApiException extends ClientException
{
    public function __construct(
        public readonly int $status,
        /** The API's error code: bad_request, unauthorized, not_found, too_large, limit, broker_error. */
        public readonly string $error,
        public readonly string $detail,
        string $request,
    ) {
        parent::__construct(sprintf('wsbridge %s: %d %s%s', $request, $status, $error, $detail === '' ? '' : ': ' . $detail), $status);
    }

    /** The exception class for an error answer. */
    public static function from(int $status, string $body, string $request): self
    {
        $d = json_decode($body, true);
        $error = is_array($d) && is_string($d['error'] ?? null) ? $d['error'] : 'http_' . $status;
        // A body that is not the API's JSON (a proxy's error page) still says something useful.
        $detail = is_array($d) && is_string($d['detail'] ?? null) ? $d['detail'] : substr(trim(strip_tags($body)), 0, 200);
        $class = match ($error) {
            'bad_request' => BadRequestException::class,
            'unauthorized' => UnauthorizedException::class,
            'not_found' => NotFoundException::class,
            'too_large' => TooLargeException::class,
            'limit' => LimitException::class,
            'broker_error' => BrokerException::class,
            default => self::class,
        };
        return new $class($status, $error, $detail, $request);
    }
}
