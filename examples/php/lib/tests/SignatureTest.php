<?php

declare(strict_types=1);

namespace WsBridge\Tests;

use PHPUnit\Framework\TestCase;
use WsBridge\Signature;
use WsBridge\SignatureException;

final class SignatureTest extends TestCase
{
    /** The vectors the Go tests check too: one set, both sides. */
    public static function vectors(): iterable
    {
        $doc = json_decode((string) file_get_contents(__DIR__ . '/../../../../bridge/testdata/signature_vectors.json'), true, 512, JSON_THROW_ON_ERROR);
        foreach ($doc['vectors'] as $v) {
            yield $v['name'] => [$v];
        }
    }

    /** @dataProvider vectors */
    public function testSharedVector(array $v): void
    {
        try {
            Signature::verify($v['secret'], $v['header'], $v['body'], $v['timestamp']);
            $accepted = true;
        } catch (SignatureException $e) {
            $accepted = false;
        }
        self::assertSame($v['valid'], $accepted, $v['name']);
    }

    /** @dataProvider vectors */
    public function testSignReproducesValidVectors(array $v): void
    {
        if (!$v['valid']) {
            $this->expectNotToPerformAssertions();
            return;
        }
        self::assertSame($v['header'], Signature::sign($v['secret'], $v['body'], $v['timestamp']));
    }

    public function testToleranceBothWays(): void
    {
        $now = 1_800_000_000;
        foreach ([-300, 0, 300] as $skew) {
            Signature::verify('k', Signature::sign('k', 'b', $now + $skew), 'b', $now);
        }
        foreach ([-301 => 'in the future', 301 => 'old'] as $age => $words) {
            try {
                Signature::verify('k', Signature::sign('k', 'b', $now - $age), 'b', $now);
                self::fail("a signature $age s away was accepted");
            } catch (SignatureException $e) {
                self::assertSame(SignatureException::EXPIRED, $e->reason);
                self::assertStringContainsString($words, $e->getMessage());
            }
        }
    }

    public function testCustomTolerance(): void
    {
        $now = 1_800_000_000;
        Signature::verify('k', Signature::sign('k', 'b', $now - 3600), 'b', $now, 7200);
        $this->expectExceptionObject(new SignatureException(SignatureException::EXPIRED, 'signature timestamp is 6 s old, outside the 5 s tolerance'));
        Signature::verify('k', Signature::sign('k', 'b', $now - 6), 'b', $now, 5);
    }

    public function testAnyOfSeveralSignaturesMatches(): void
    {
        $good = Signature::sign('new', 'body', 100);
        $old = Signature::sign('old', 'body', 100);
        $header = $old . ',' . substr($good, strpos($good, 'v1='));
        Signature::verify('new', $header, 'body', 100);
        Signature::verify('old', $header, 'body', 100);
        $this->expectException(SignatureException::class);
        Signature::verify('neither', $header, 'body', 100);
    }

    public function testReasons(): void
    {
        $cases = [
            ['', SignatureException::MALFORMED],
            ['t=abc,v1=00', SignatureException::MALFORMED],
            ['v1=00', SignatureException::MALFORMED],
            ['t=100,v1=' . str_repeat('0', 64), SignatureException::MISMATCH],
        ];
        foreach ($cases as [$header, $reason]) {
            try {
                Signature::verify('k', $header, 'body', 100);
                self::fail("accepted \"$header\"");
            } catch (SignatureException $e) {
                self::assertSame($reason, $e->reason, $header);
            }
        }
    }

    public function testEmptySecretRefusesToVerify(): void
    {
        $this->expectException(\InvalidArgumentException::class);
        Signature::verify('', Signature::sign('', 'b', 100), 'b', 100);
    }
}
