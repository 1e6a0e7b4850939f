<?php

declare(strict_types=1);

namespace WsBridge;

/** A webhook request that is not a well-formed wsbridge event (bad JSON, missing fields). */
final class ProtocolException extends \RuntimeException
{
}
