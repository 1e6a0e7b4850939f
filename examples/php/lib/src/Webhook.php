<?php

declare(strict_types=1);

namespace WsBridge;

/**
 * Reads a webhook request: checks its signature, then decodes it into an Event.
 *
 *     try {
 *         $event = (new Webhook($secret))->receive();
 *     } catch (SignatureException | ProtocolException $e) {
 *         Webhook::refuse($e); // 401 or 400, and exit
 *     }
 */
final class Webhook
{
    public function __construct(
        /** WSBRIDGE_WEBHOOK_SECRET; "" accepts unsigned webhooks (local experiments only). */
        private readonly string $secret,
        private readonly int $tolerance = Signature::DEFAULT_TOLERANCE,
    ) {
    }

    /**
     * The event of the current PHP request (php://input and $_SERVER).
     *
     * @throws SignatureException when the signature is missing, stale or wrong
     * @throws ProtocolException when the request is not a wsbridge event
     */
    public function receive(): Event
    {
        if (($_SERVER['REQUEST_METHOD'] ?? '') !== 'POST') {
            throw new ProtocolException('webhooks are POST requests');
        }
        $headers = [];
        foreach (['WsBridge-Signature', 'WsBridge-Event', 'WsBridge-Event-Id', 'WsBridge-Connection'] as $name) {
            $key = 'HTTP_' . strtoupper(str_replace('-', '_', $name));
            if (isset($_SERVER[$key])) {
                $headers[$name] = (string) $_SERVER[$key];
            }
        }
        return $this->parse((string) file_get_contents('php://input'), $headers);
    }

    /**
     * The event of a request given explicitly (for frameworks that wrap the request, and tests).
     *
     * @param array<string, string> $headers header name => value; names case-insensitive
     * @throws SignatureException
     * @throws ProtocolException
     */
    public function parse(string $body, array $headers, ?int $now = null): Event
    {
        $headers = array_change_key_case($headers, CASE_LOWER);
        if ($this->secret !== '') {
            Signature::verify($this->secret, $headers['wsbridge-signature'] ?? '', $body, $now, $this->tolerance);
        }
        $event = Event::fromJson($body);
        // The headers are covered by nothing but the body is signed: they must agree with it.
        foreach (['wsbridge-event' => $event->type(), 'wsbridge-event-id' => $event->eventId, 'wsbridge-connection' => $event->connectionId] as $name => $want) {
            if (isset($headers[$name]) && $headers[$name] !== $want) {
                throw new ProtocolException("header $name does not match the body");
            }
        }
        return $event;
    }

    /** Answers a refused webhook: 401 for a bad signature, 400 otherwise, and ends the request. */
    public static function refuse(\Throwable $e): never
    {
        http_response_code($e instanceof SignatureException ? 401 : 400);
        header('Content-Type: text/plain; charset=utf-8');
        echo $e instanceof SignatureException ? 'bad signature' : 'bad webhook';
        error_log('wsbridge webhook refused: ' . $e->getMessage());
        exit;
    }
}
