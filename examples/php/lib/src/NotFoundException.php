<?php

declare(strict_types=1);

namespace WsBridge;

/** 404: no such endpoint, or no such connection on this node. */
final class NotFoundException extends ApiException
{
}
