#!/bin/sh
echo payload-ran
