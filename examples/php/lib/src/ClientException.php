<?php

declare(strict_types=1);

namespace WsBridge;

/** Anything that went wrong calling the push API: catch this to catch them all. */
abstract class ClientException extends \RuntimeException
{
}
